"""Grouped k-fold: groups never split, reproducible, every image exactly once, folds.json round trip."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bookseg.data.folds import assign_groups, load_folds, make_folds, save_folds, split
from bookseg.data.records import ImageRecord, Instance

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
OPEN_SHELVES = SHARED_DATA / "open_shelves" / "via_project.json"
# Roboflow names copies NAME_jpg.rf.HASH.jpg, NAME_jpeg.rf.HASH.jpg or NAME-jpg_compressed_JPEG.rf.HASH.jpg:
# the photo is everything before ".rf.".
ROBOFLOW_GROUP = r"^(.*)\.rf\."


@pytest.fixture(scope="module")
def open_shelves():
    from bookseg.data.readers import load_dataset

    return load_dataset(OPEN_SHELVES, check_images=False).records


def _records(names, instances_per_image=None, attributes=None):
    records = []
    for i, name in enumerate(names):
        n = instances_per_image[i] if instances_per_image else 1
        square = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0]])
        records.append(
            ImageRecord(
                image_id=name,
                path=Path("/data") / name,
                width=10,
                height=10,
                instances=[Instance("book", polygon=square) for _ in range(n)],
                source="/data/project.json",
                attributes=(attributes or [{}] * len(names))[i],
            )
        )
    return records


def _fold_of(folds):
    return {image_id: index for index, fold in enumerate(folds) for image_id in fold}


def test_open_shelves_copies_of_one_photo_stay_in_one_fold(open_shelves):
    records = open_shelves
    groups = assign_groups(records, regex=ROBOFLOW_GROUP)
    assert len(records) == 482 and len(set(groups)) == 149

    folds = make_folds(records, 5, seed=0)
    fold_of = _fold_of(folds)
    assert sorted(fold_of) == sorted(r.image_id for r in records)  # every image exactly once
    assert sum(len(f) for f in folds) == 482
    photo_folds = {}
    for record in records:
        photo_folds.setdefault(record.group, set()).add(fold_of[record.image_id])
    assert all(len(f) == 1 for f in photo_folds.values())
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 4  # GroupKFold balances image counts

    assert make_folds(records, 5, seed=0) == folds
    assert make_folds(records, 5, seed=1) != folds


def test_open_shelves_stratified_folds_balance_instance_counts(open_shelves):
    records = open_shelves
    assign_groups(records, regex=ROBOFLOW_GROUP)
    folds = make_folds(records, 4, seed=3, stratify=True)
    fold_of = _fold_of(folds)
    assert len(fold_of) == 482
    by_group = {}
    for record in records:
        by_group.setdefault(record.group, set()).add(fold_of[record.image_id])
    assert all(len(f) == 1 for f in by_group.values())
    assert make_folds(records, 4, seed=3, stratify=True) == folds
    counts = {r.image_id: len(r.instances) for r in records}
    means = [np.mean([counts[i] for i in fold]) for fold in folds]
    assert max(means) / min(means) < 1.6


def test_regex_groups_video_frames_and_whole_match():
    records = _records(["12_0s.jpg", "12_5s.jpg", "7_0s.jpg"])
    assert assign_groups(records, regex=r"^(\d+)_\d+s\.jpg$") == ["12", "12", "7"]
    assert [r.group for r in records] == ["12", "12", "7"]
    assert assign_groups(records, regex=r"^\d+") == ["12", "12", "7"]


def test_regex_that_misses_a_file_names_it():
    records = _records(["12_0s.jpg", "holiday.jpg", "7_0s.jpg"])
    with pytest.raises(ValueError) as error:
        assign_groups(records, regex=r"^(\d+)_\d+s\.jpg$")
    message = str(error.value)
    assert "/data/project.json" in message and "holiday.jpg" in message and "1 of 3 images" in message
    assert "12_0s.jpg" not in message
    assert [r.group for r in records] == ["", "", ""]  # nothing half-assigned
    with pytest.raises(ValueError, match="invalid group regex"):
        assign_groups(records, regex="(")


def test_attribute_groups_and_missing_values():
    records = _records(
        ["a.jpg", "b.jpg", "c.jpg"],
        attributes=[{"scene": "s1"}, {"scene": 2}, {"scene": {"x": True, "y": False}}],
    )
    assert assign_groups(records, attribute="scene") == ["s1", "2", "x"]
    records[1].attributes = {"scene": " "}
    with pytest.raises(ValueError, match=r"'scene' is missing or empty for 1 of 3 images: b.jpg"):
        assign_groups(records, attribute="scene")
    with pytest.raises(ValueError, match="not both"):
        assign_groups(records, regex="x", attribute="scene")


def test_default_is_one_group_per_image():
    records = _records(["a.jpg", "b.jpg"])
    assert assign_groups(records) == ["a.jpg", "b.jpg"]


def test_k_must_fit_the_number_of_groups():
    records = _records([f"{i // 2}_{i}s.jpg" for i in range(6)])
    assign_groups(records, regex=r"^(\d+)_")
    for bad in (1, 4, 2.0, True):
        with pytest.raises(ValueError, match=r"2 <= k <= number of groups \(3\)"):
            make_folds(records, bad)
    folds = make_folds(records, 3)
    assert sorted(len(f) for f in folds) == [2, 2, 2]
    assert all(len({name.split("_")[0] for name in fold}) == 1 for fold in folds)


def test_records_need_groups_and_unique_ids():
    records = _records(["a.jpg", "b.jpg", "c.jpg"])
    with pytest.raises(ValueError, match="no group"):
        make_folds(records, 2)
    records = _records(["a.jpg", "a.jpg", "c.jpg"])
    assign_groups(records, regex=r"^(\w)")
    with pytest.raises(ValueError, match="duplicate image ids: \\['a.jpg'\\]"):
        make_folds(records, 2)


def test_stratified_keeps_empty_images_spread():
    counts = [0] * 8 + [3] * 8 + [20] * 8
    records = _records([f"img{i}.jpg" for i in range(24)], instances_per_image=counts)
    assign_groups(records)
    folds = make_folds(records, 4, seed=0, stratify=True)
    per_fold = [Counter(len(r.instances) for r in records if r.image_id in fold) for fold in folds]
    assert all(c[0] == 2 and c[3] == 2 and c[20] == 2 for c in per_fold)


def test_split_partitions_the_records():
    records = _records([f"img{i}.jpg" for i in range(10)])
    assign_groups(records)
    folds = make_folds(records, 5, seed=2)
    for index in range(5):
        train, val = split(records, folds, index)
        assert [r.image_id for r in val] == folds[index]
        assert len(train) + len(val) == 10 and not {r.image_id for r in train} & set(folds[index])
    with pytest.raises(IndexError):
        split(records, folds, 5)
    with pytest.raises(ValueError, match="in no fold"):
        split(records + _records(["extra.jpg"]), folds, 0)


def test_save_and_load_round_trip_and_no_silent_overwrite(tmp_path):
    records = _records([f"{i // 2}_{i}s.jpg" for i in range(8)])
    assign_groups(records, regex=r"^(\d+)_")
    folds = make_folds(records, 2, seed=0)
    meta = {"k": 2, "seed": 0, "group_by": "regex", "groups": {r.image_id: r.group for r in records}}
    path = save_folds(folds, tmp_path / "folds.json", meta)

    data = load_folds(path)
    assert data == {"k": 2, "seed": 0, "group_by": "regex", "folds": folds, "groups": meta["groups"]}
    assert list(json.loads(path.read_text())) == ["k", "seed", "group_by", "folds", "groups"]

    save_folds(folds, path, meta)  # identical content: fine
    with pytest.raises(FileExistsError, match="different folds"):
        save_folds(folds[::-1], path, meta)
    assert load_folds(path)["folds"] == folds
    with pytest.raises(ValueError, match="meta says k=3"):
        save_folds(folds, tmp_path / "other.json", {**meta, "k": 3})


def test_load_rejects_inconsistent_files(tmp_path):
    path = tmp_path / "folds.json"
    path.write_text(json.dumps({"k": 2, "folds": [["a", "b"], ["b"]]}))
    with pytest.raises(ValueError, match="'b' is in folds 0 and 1"):
        load_folds(path)
    path.write_text(json.dumps({"k": 2, "folds": [["a"], ["b"]], "groups": {"a": "g", "b": "g"}}))
    with pytest.raises(ValueError, match="group 'g' is split across folds 0 and 1"):
        load_folds(path)
    path.write_text(json.dumps({"k": 3, "folds": [["a"], ["b"]]}))
    with pytest.raises(ValueError, match="k=3 but 2 folds"):
        load_folds(path)
