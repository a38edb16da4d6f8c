"""Load the data set a config names (synthetic, VIA, COCO, LabelMe), assign fold groups, fingerprint it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import DictConfig

from bookseg.data.folds import assign_groups
from bookseg.data.readers import Dataset, load_dataset


def load_data(cfg: DictConfig) -> Dataset:
    """Read `cfg.data` through the common reader path and set each record's fold group."""
    d = cfg.data
    if d.kind == "synthetic":
        from bookseg.data.synthetic import style_by_name, synthetic_dataset_path

        s = d.synthetic
        style = style_by_name(s.get("style") or "default")  # configs saved before `style` existed lack it
        path = synthetic_dataset_path(Path(d.cache_dir), s.n_images, s.seed, (s.height, s.width), style=style)
        dataset = load_dataset(path)
    else:
        dataset = load_dataset(
            Path(d.path).expanduser(),
            format=d.kind,  # data=coco on a VIA file is an error, not a silent switch
            images_dir=Path(d.images_dir).expanduser() if d.images_dir else None,
            class_attribute=d.class_attribute,
            default_class=d.default_class,
        )
    assign_groups(dataset.records, regex=d.group_regex, attribute=d.group_attribute)
    return dataset


def load_test_data(cfg: DictConfig, dataset: Dataset) -> Dataset | None:
    """The held-out test set of `cfg.data.test`, read with the training set's classes; None if unset.

    Raises:
        DatasetError: the test file has errors, or a classes the training set lacks.
        ValueError: a test image is also a training image (same file content), naming both.
    """
    t, d = cfg.data.test, cfg.data
    if not t.path:
        return None
    kind = t.kind or d.kind
    if kind == "synthetic":
        raise ValueError("data.test.kind=synthetic: a test set is an annotation file (via, coco or labelme)")
    test = load_dataset(
        Path(t.path).expanduser(),
        format=kind,
        images_dir=Path(t.images_dir).expanduser() if t.images_dir else None,
        class_attribute=d.class_attribute,
        default_class=d.default_class,
        class_names=dataset.class_names,
    )
    _refuse_shared_images(dataset, test)
    return test


def _refuse_shared_images(train: Dataset, test: Dataset) -> None:
    """Raise ValueError if an image file of `test` has the same content as one of `train`.

    Only files of equal byte size are hashed, so the check reads few images.
    """
    by_size: dict[int, list] = {}
    for record in train.records:
        by_size.setdefault(Path(record.path).stat().st_size, []).append(record)
    digests: dict = {}

    def digest(record):
        if record.path not in digests:
            digests[record.path] = hashlib.sha256(Path(record.path).read_bytes()).hexdigest()
        return digests[record.path]

    for record in test.records:
        for other in by_size.get(Path(record.path).stat().st_size, []):
            if digest(record) == digest(other):
                raise ValueError(
                    f"test image {record.path} ({test.source}) is the same file as training image {other.path} "
                    f"({train.source}): a test set must be held out"
                )


def fingerprint(dataset: Dataset) -> str:
    """Hash of the records: image names, byte sizes and sizes, groups and annotations.

    Image contents are not read (too slow for large sets): an image edited in place to the same byte
    size keeps the fingerprint.
    """
    h = hashlib.sha1()
    for record in sorted(dataset.records, key=lambda r: r.image_id):
        size = Path(record.path).stat().st_size
        h.update(f"{record.image_id}|{size}|{record.width}x{record.height}|{record.group}".encode())
        for inst in record.instances:
            h.update(inst.class_name.encode())
            if inst.polygon is not None:
                h.update(inst.polygon.astype("float32").tobytes())
            if inst.mask is not None:
                h.update(inst.mask.astype("uint8").tobytes())
    return h.hexdigest()[:16]
