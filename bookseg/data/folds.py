"""Grouped k-fold splits: images of one source photo (augmented copies, video frames) share a fold.

Typical use::

    assign_groups(records, regex=r"^(.*)\\.rf\\.")     # Roboflow copies NAME_jpg.rf.HASH.jpg
    folds = make_folds(records, k=5, seed=0)
    save_folds(folds, "folds.json", {"seed": 0, "group_by": "regex ...",
                                     "groups": {r.image_id: r.group for r in records}})
    train, val = split(records, folds, fold_index=0)

Fold assignment uses scikit-learn's `GroupKFold` (balances image counts per fold) on group labels
permuted with the seed, so different seeds give different, reproducible folds; with `stratify=True`
it uses `StratifiedGroupKFold` on binned instance counts per image.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from bookseg.data.records import ImageRecord

# Largest number of file names listed in one error message.
_MAX_LISTED = 10


def assign_groups(
    records: Sequence[ImageRecord], *, regex: str | None = None, attribute: str | None = None
) -> list[str]:
    """Set `record.group` on every record and return the groups in record order.

    Args:
        records: images to group (modified in place).
        regex: applied with `re.search` to each image's file name (`Path(record.path).name`); the
            group is the first capture group, or the whole match when the pattern has no group.
            E.g. `^(.*)\\.rf\\.` for Roboflow copies (`NAME_jpg.rf.HASH.jpg`, `NAME-jpg_compressed_JPEG.rf.
            HASH.jpg`), `^(\\d+)_\\d+s\\.jpg$` for video frames.
            A file name the regex does not match is an error (no fallback: a silent one-image group
            could put copies of one photo in different folds).
        attribute: name of a file attribute (VIA `file_attributes`) holding the group. A missing or
            empty value is an error.
        With neither, every image is its own group (its image id).

    Raises:
        ValueError: both `regex` and `attribute` given, an invalid regex, or images without a group
            (the message lists them).
    """
    if regex and attribute:
        raise ValueError("assign_groups: give either regex or attribute, not both")
    if regex:
        try:
            pattern = re.compile(regex)
        except re.error as error:
            raise ValueError(f"assign_groups: invalid group regex {regex!r}: {error}") from error
        groups, missing = _groups_from_regex(records, pattern)
        what = f"group regex {regex!r} does not match the file name of"
    elif attribute:
        groups, missing = _groups_from_attribute(records, attribute)
        what = f"file attribute {attribute!r} is missing or empty for"
    else:
        groups, missing = [r.image_id for r in records], []
    if missing:
        sources = ", ".join(sorted({r.source for r in missing if r.source}))
        listed = ", ".join(Path(r.path).name for r in missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        prefix = f"{sources}: " if sources else ""
        raise ValueError(f"{prefix}{what} {len(missing)} of {len(records)} images: {listed}{more}")
    for record, group in zip(records, groups):
        record.group = group
    return groups


def make_folds(
    records: Sequence[ImageRecord], k: int, *, seed: int = 0, stratify: bool = False
) -> list[list[str]]:
    """Split images into `k` folds that never split a group.

    Args:
        records: images with `group` set (see `assign_groups`); image ids must be unique.
        k: number of folds, 2 <= k <= number of distinct groups.
        seed: permutes the group labels (and seeds StratifiedGroupKFold's shuffle).
        stratify: balance instance counts across folds (StratifiedGroupKFold on count bins:
            images without instances form their own bin).

    Returns:
        k lists of image ids (record order inside each fold); every image is in exactly one fold.

    Raises:
        ValueError: bad k, duplicate image ids, or records without a group.
    """
    ids = [r.image_id for r in records]
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"make_folds: duplicate image ids: {duplicates[:_MAX_LISTED]}")
    ungrouped = [r for r in records if not r.group]
    if ungrouped:
        raise ValueError(
            f"make_folds: {len(ungrouped)} images have no group (call assign_groups first), e.g. "
            + ungrouped[0].where()
        )
    group_names = [r.group for r in records]
    n_groups = len(set(group_names))
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2 or k > n_groups:
        raise ValueError(
            f"make_folds: k must be an integer with 2 <= k <= number of groups ({n_groups}), got {k!r}"
        )
    rng = np.random.default_rng(seed)
    unique = sorted(set(group_names))
    permuted = dict(zip(unique, rng.permutation(len(unique))))
    labels = np.array([permuted[g] for g in group_names])
    placeholder = np.zeros((len(records), 1))
    if stratify:
        bins = _instance_count_bins(np.array([len(r.instances) for r in records]), k)
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
        splits = splitter.split(placeholder, bins, groups=labels)
    else:
        splits = GroupKFold(n_splits=k).split(placeholder, groups=labels)
    folds = [[ids[i] for i in sorted(test)] for _, test in splits]
    if any(not fold for fold in folds):
        raise ValueError(f"make_folds: could not fill {k} folds from {n_groups} groups; use a smaller k")
    return folds


def split(
    records: Sequence[ImageRecord], folds: Sequence[Sequence[str]], fold_index: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(train, validation) records of fold `fold_index`: validation = that fold, train = the others.

    Raises:
        IndexError: fold_index outside 0..k-1.
        ValueError: the folds name images that are not in `records`, or miss some records.
    """
    if not 0 <= fold_index < len(folds):
        raise IndexError(f"split: fold_index {fold_index} outside 0..{len(folds) - 1}")
    by_id = {r.image_id: r for r in records}
    in_folds = [i for fold in folds for i in fold]
    unknown = [i for i in in_folds if i not in by_id]
    if unknown:
        raise ValueError(f"split: folds name {len(unknown)} images not in the data set, e.g. {unknown[:3]}")
    missing = set(by_id) - set(in_folds)
    if missing:
        raise ValueError(f"split: {len(missing)} images are in no fold, e.g. {sorted(missing)[:3]}")
    val_ids = set(folds[fold_index])
    return [r for r in records if r.image_id not in val_ids], [r for r in records if r.image_id in val_ids]


def save_folds(folds: Sequence[Sequence[str]], path: str | os.PathLike, meta: Mapping) -> Path:
    """Write folds as JSON: `{"k", "seed", "group_by", "folds", "groups", ...other meta keys}`.

    Args:
        folds: image ids per fold.
        path: output file.
        meta: `seed`, `group_by` (how groups were made), `groups` ({image_id: group}) and any other
            JSON-serialisable keys to keep. A `k` in meta must equal len(folds).

    Raises:
        FileExistsError: `path` holds different folds (an identical file is left as it is).
        ValueError: inconsistent k, or an image in two folds.
    """
    path = Path(path)
    data = {
        "k": len(folds),
        "seed": meta.get("seed"),
        "group_by": meta.get("group_by"),
        "folds": [list(map(str, fold)) for fold in folds],
        "groups": dict(meta.get("groups", {})),
    }
    data.update({key: value for key, value in meta.items() if key not in data})
    if meta.get("k", len(folds)) != len(folds):
        raise ValueError(f"{path}: meta says k={meta['k']} but there are {len(folds)} folds")
    _check_folds(data, path)
    text = json.dumps(data, indent=1, sort_keys=False)
    if path.exists():
        if json.loads(path.read_text(encoding="utf-8")) == json.loads(text):
            return path
        raise FileExistsError(f"{path}: holds different folds; refusing to overwrite (delete it to re-split)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def load_folds(path: str | os.PathLike) -> dict:
    """Read a folds file written by `save_folds`; returns its dict (`k`, `seed`, `group_by`, `folds`, ...).

    Raises:
        ValueError: missing keys, k != number of folds, an image in two folds or a group in two folds.
    """
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("k", "folds"):
        if key not in data:
            raise ValueError(f"{path}: not a folds file (no {key!r} key)")
    if data["k"] != len(data["folds"]):
        raise ValueError(f"{path}: k={data['k']} but {len(data['folds'])} folds are listed")
    _check_folds(data, path)
    return data


def _check_folds(data: Mapping, path: Path) -> None:
    fold_of: dict[str, int] = {}
    for index, fold in enumerate(data["folds"]):
        for image_id in fold:
            if image_id in fold_of:
                raise ValueError(f"{path}: image {image_id!r} is in folds {fold_of[image_id]} and {index}")
            fold_of[image_id] = index
    group_fold: dict[str, int] = {}
    for image_id, group in (data.get("groups") or {}).items():
        if image_id not in fold_of:
            continue
        previous = group_fold.setdefault(group, fold_of[image_id])
        if previous != fold_of[image_id]:
            raise ValueError(
                f"{path}: group {group!r} is split across folds {previous} and {fold_of[image_id]}"
            )


def _groups_from_regex(records, pattern: re.Pattern) -> tuple[list[str], list[ImageRecord]]:
    groups, missing = [], []
    for record in records:
        match = pattern.search(Path(record.path).name)
        group = (match.group(1) if pattern.groups else match.group(0)) if match else None
        if not group:
            missing.append(record)
        groups.append(group or "")
    return groups, missing


def _groups_from_attribute(records, attribute: str) -> tuple[list[str], list[ImageRecord]]:
    groups, missing = [], []
    for record in records:
        value = record.attributes.get(attribute)
        if isinstance(value, dict):  # VIA checkbox: {option: True}
            value = ",".join(sorted(str(option) for option, ticked in value.items() if ticked))
        group = "" if value is None else str(value).strip()
        if not group:
            missing.append(record)
        groups.append(group)
    return groups, missing


def _instance_count_bins(counts: np.ndarray, k: int) -> np.ndarray:
    """Bin ids of instance counts: 0 for images without instances, then up to 4 quantile bins,
    merged until each bin has at least k images (StratifiedGroupKFold warns otherwise)."""
    bins = np.zeros(len(counts), int)
    positive = counts > 0
    if positive.any():
        edges = np.unique(np.quantile(counts[positive], [0.25, 0.5, 0.75]))
        bins[positive] = 1 + np.searchsorted(edges, counts[positive], side="right")
    labels = sorted(set(bins.tolist()))
    while len(labels) > 1:
        sizes = {label: int((bins == label).sum()) for label in labels}
        smallest = min(labels, key=lambda label: sizes[label])
        if sizes[smallest] >= k:
            break
        position = labels.index(smallest)
        neighbour = labels[position - 1] if position > 0 else labels[position + 1]
        bins[bins == smallest] = neighbour
        labels.remove(smallest)
    return bins
