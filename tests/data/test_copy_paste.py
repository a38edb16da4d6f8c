"""Copy-paste augmentation: pasted pixels are the source's under the pasted mask, covered instances lose
exactly the covered pixels (and are dropped and counted when nothing is left), boxes follow the masks,
sources come only from the pool (the fold's training records), seeded and thread-safe, off at p = 0,
configurable from Hydra, and the training pipeline gets more instances per image."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from bookseg.config.schema import register_configs
from bookseg.config.validate import ConfigError, validate
from bookseg.data import copy_paste as copy_paste_module
from bookseg.data.augment import build_augmentation
from bookseg.data.copy_paste import CopyPaster, build_copy_paste, instance_crop
from bookseg.data.folds import make_folds, split
from bookseg.data.records import ImageRecord, Instance, boxes_from_masks
from bookseg.mrcnn.config import MrcnnConfig
from bookseg.mrcnn.inputs import PipelineStats, load_training_example, make_dataset

CONF = Path(__file__).resolve().parents[2] / "conf"
H, W = 40, 60
CLASSES = ["book"]
FLIPS = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.VerticalFlip", "p": 0.5},
]
QUAD = np.array([[10.3, 4.7], [30.2, 8.1], [26.6, 33.4], [12.1, 28.9]])  # irregular, fractional vertices
# Images of 40 x 60 to 64 x 96 are scaled up into a 128 x 128 input.
CONFIG = MrcnnConfig(
    num_classes=2,
    image_min_dim=64,
    image_max_dim=128,
    rpn_anchor_scales=(8, 16, 32, 64, 128),
    max_gt_instances=20,
    rpn_train_anchors_per_image=32,
    mini_mask_shape=(14, 14),
    images_per_batch=2,
)


def _rect(x1, y1, x2, y2):
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], float)


def _photo(tmp_path, name, polygons, *, seed=0, colour=None, h=H, w=W):
    """A PNG (lossless: decoded pixels equal the written ones) of noise or one colour, and its record."""
    if colour is None:
        image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        image = np.full((h, w, 3), colour, np.uint8)
    path = tmp_path / name
    cv2.imwrite(str(path), image[:, :, ::-1])
    instances = [Instance("book", np.asarray(p, float), region=f"region {i}") for i, p in enumerate(polygons)]
    return ImageRecord(name, path, w, h, instances, source="test.json"), image


def _target(seed=99):
    """Noise image with three rectangular instances (class ids 11, 12, 13: pasted books have id 1)."""
    image = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    masks = np.zeros((H, W, 3), bool)
    masks[2:12, 3:20, 0] = True
    masks[15:38, 25:31, 1] = True
    masks[20:24, 45:49, 2] = True
    return image, masks, np.array([11, 12, 13], np.int32)


def _paster(records, **settings):
    return CopyPaster(records, CLASSES, **{"p": 1.0, **settings})


@pytest.mark.parametrize("mirror", [False, True])
def test_pasted_pixels_are_the_source_pixels_under_the_source_mask(tmp_path, mirror):
    record, source = _photo(tmp_path, "src.png", [QUAD], seed=1)
    source_mask = record.masks()[:, :, 0]
    sy1, sx1, sy2, sx2 = boxes_from_masks(source_mask[:, :, None])[0]
    expected_mask, expected_pixels = source_mask[sy1:sy2, sx1:sx2], source[sy1:sy2, sx1:sx2]
    if mirror:
        expected_mask, expected_pixels = expected_mask[:, ::-1], expected_pixels[:, ::-1]
    paster = _paster([record], scale=[1, 1], hflip=float(mirror))
    target = np.random.default_rng(7).integers(0, 256, (H, W, 3), dtype=np.uint8)
    positions = set()
    for seed in range(6):
        result = paster(
            target, np.zeros((H, W, 0), bool), np.zeros(0, np.int32), rng=np.random.default_rng(seed)
        )
        assert result.pasted == 1 and result.class_ids.tolist() == [1] and result.dropped == 0
        mask = result.masks[:, :, 0]
        ty1, tx1, ty2, tx2 = result.boxes[0]
        positions.add((int(ty1), int(tx1)))
        np.testing.assert_array_equal(mask[ty1:ty2, tx1:tx2], expected_mask)  # fully inside: it fits
        np.testing.assert_array_equal(
            result.image[ty1:ty2, tx1:tx2][expected_mask], expected_pixels[expected_mask]
        )
        np.testing.assert_array_equal(result.image[~mask], target[~mask])  # nothing else changed
    assert len({y for y, _ in positions}) > 1 and len({x for _, x in positions}) > 1  # random positions


def test_scaled_paste_uses_nearest_neighbour_masks_and_changes_only_masked_pixels(tmp_path):
    small_quad = QUAD * 0.6 + 2  # fits the 40 x 60 target at 1.5 times its size
    record, _ = _photo(tmp_path, "src.png", [small_quad], seed=1)
    _, _, source_mask = instance_crop(record.instances[0], H, W)
    target = np.zeros((H, W, 3), np.uint8)
    result = _paster([record], scale=[1.5, 1.5], hflip=0)(
        target, np.zeros((H, W, 0), bool), np.zeros(0, np.int32), rng=np.random.default_rng(0)
    )
    mask = result.masks[:, :, 0]
    # Centre-aligned nearest neighbour: output pixel i takes input pixel floor((i + 0.5) * in / out).
    h, w = source_mask.shape
    out_h, out_w = round(h * 1.5), round(w * 1.5)
    rows = np.floor((np.arange(out_h) + 0.5) * h / out_h).astype(int)
    cols = np.floor((np.arange(out_w) + 0.5) * w / out_w).astype(int)
    expected = source_mask[rows][:, cols]
    y1, x1, _, _ = boxes_from_masks(expected[:, :, None])[0]  # the scaled mask's own first row / column
    top, left = result.boxes[0][:2] - (y1, x1)
    np.testing.assert_array_equal(mask[top : top + out_h, left : left + out_w], expected)
    assert mask.sum() == expected.sum()
    assert not result.image[~mask].any() and result.image[mask].any()


def test_instance_crop_equals_the_full_mask(tmp_path):
    rng = np.random.default_rng(0)
    # Inside, cut by the border, outside; then random self-intersecting ones, partly outside.
    polygons = [QUAD, _rect(-5.5, 30.2, 12.7, 50.0), _rect(70, 0, 80, 10)]
    polygons += [rng.uniform(-10, 70, (7, 2)) for _ in range(20)]
    full_mask = np.zeros((H, W), bool)
    full_mask[3:9, 50:52] = True
    for instance in [Instance("book", polygon=p) for p in polygons] + [Instance("book", mask=full_mask)]:
        full = instance.to_mask(H, W)
        crop = instance_crop(instance, H, W)
        if not full.any():
            assert crop is None
            continue
        top, left, mask = crop
        y1, x1, y2, x2 = boxes_from_masks(full[:, :, None])[0]
        assert (top, left) == (y1, x1)
        np.testing.assert_array_equal(mask, full[y1:y2, x1:x2])


@pytest.mark.parametrize("min_visible_pixels", [1, 30])
def test_covered_instances_lose_exactly_the_covered_pixels(tmp_path, min_visible_pixels):
    records = [
        _photo(
            tmp_path, f"src{i}.png", [QUAD, _rect(35, 2 + i, 58, 15 + 3 * i), _rect(40, 20, 44, 39)], seed=i
        )[0]
        for i in range(3)
    ]
    paster = _paster(records, max_instances=5, scale=[0.8, 1.6], min_visible_pixels=min_visible_pixels)
    image, masks, class_ids = _target()
    n_dropped = 0
    for seed in range(12):
        result = paster(image, masks, class_ids, rng=np.random.default_rng(seed))
        n_pasted = len(result.class_ids) - (result.class_ids > 10).sum()
        assert n_pasted == result.pasted >= 1 and (result.class_ids[-n_pasted:] == 1).all()
        pasted_union = result.masks[:, :, -n_pasted:].any(axis=-1)
        changed = (result.image != image).any(axis=-1)
        if min_visible_pixels == 1:  # nothing pasted was discarded: the kept pastes are all that changed
            assert not (changed & ~pasted_union).any()
        # A paste discarded for too few visible pixels still left those pixels (as dropped instances do).
        covered = pasted_union | changed
        kept = list(result.class_ids[:-n_pasted])
        for k, class_id in enumerate(class_ids):
            visible = masks[:, :, k] & ~covered
            if visible.sum() >= min_visible_pixels or not (masks[:, :, k] & covered).any():
                np.testing.assert_array_equal(result.masks[:, :, kept.index(class_id)], visible)
            else:
                assert class_id not in kept
        assert result.dropped == len(class_ids) - len(kept)
        assert (result.masks[:, :, -n_pasted:].sum(axis=(0, 1)) >= min_visible_pixels).all()
        assert result.masks.sum(axis=-1).max() <= 1  # every pixel belongs to at most one instance
        np.testing.assert_array_equal(result.boxes, boxes_from_masks(result.masks))
        assert result.boxes.dtype == result.class_ids.dtype == np.int32 and result.masks.dtype == bool
        n_dropped += result.dropped
    assert n_dropped > 0  # the seeds did cover some instances


def test_fully_covered_instances_are_dropped_and_counted(tmp_path):
    cover, cover_image = _photo(
        tmp_path, "cover.png", [_rect(0, 0, W, H)], seed=3
    )  # one book fills the photo
    image, masks, class_ids = _target()
    result = _paster([cover], scale=[1, 1], hflip=0)(image, masks, class_ids, rng=np.random.default_rng(0))
    assert result.dropped == 3 and result.pasted == 1 and result.class_ids.tolist() == [1]
    np.testing.assert_array_equal(result.image, cover_image)
    np.testing.assert_array_equal(result.boxes, [[0, 0, H, W]])
    # The training pipeline counts them with the other augmentation drops.
    target, _ = _photo(tmp_path, "target.png", [_rect(3, 2, 20, 12), _rect(25, 15, 31, 38)], seed=4)
    augment = build_augmentation([], copy_paste=_paster([cover], scale=[1, 1], hflip=0))
    stats = PipelineStats()
    example = load_training_example(
        target, CONFIG, {"book": 1}, augment=augment, rng=np.random.default_rng(0), stats=stats
    )
    assert stats.dropped_by_augmentation == 2 and (example["input_gt_class_ids"] > 0).sum() == 1


def test_only_the_pool_records_are_sources_and_loaded_lazily(tmp_path, monkeypatch):
    colours = {"a.png": (200, 0, 0), "b.png": (0, 200, 0), "c.png": (0, 0, 200), "d.png": (200, 200, 0)}
    records = [_photo(tmp_path, name, [_rect(5, 5, 25, 30)], colour=c)[0] for name, c in colours.items()]
    records.append(_photo(tmp_path, "empty.png", [], colour=(9, 9, 9))[0])  # no book to give
    for record in records:
        record.group = record.image_id
    train, val = split(records, make_folds(records, 2, seed=0), 0)
    loaded, load = [], copy_paste_module.load_image_rgb

    def counting_load(path):
        loaded.append(Path(path).name)
        return load(path)

    monkeypatch.setattr(copy_paste_module, "load_image_rgb", counting_load)
    paster = build_copy_paste({"p": 1.0, "max_instances": 2, "scale": [1, 1], "hflip": 0.5}, train, CLASSES)
    assert paster.records == [r for r in train if r.instances]
    assert loaded == []  # nothing decoded before the first paste
    seen = set()
    for seed in range(30):
        result = paster(
            np.zeros((H, W, 3), np.uint8),
            np.zeros((H, W, 0), bool),
            np.zeros(0, np.int32),
            rng=np.random.default_rng(seed),
        )
        seen |= {tuple(int(v) for v in c) for c in result.image.reshape(-1, 3)}
    train_colours = {colours[r.image_id] for r in train if r.image_id in colours}
    assert seen - {(0, 0, 0)} == train_colours  # every training book shows up, no other
    assert set(loaded) == {r.image_id for r in paster.records}
    assert not set(loaded) & {r.image_id for r in val}
    assert len(loaded) == len(set(loaded))  # decoded once each: the cache serves the rest


def test_same_seed_same_output_different_seed_different_and_thread_safe(tmp_path):
    records = [_photo(tmp_path, f"src{i}.png", [QUAD, _rect(35, 2, 58, 15)], seed=i)[0] for i in range(3)]
    image, masks, class_ids = _target()

    def run(augment, seed):
        return augment(image, masks, class_ids, rng=np.random.default_rng(seed))

    augment = build_augmentation(FLIPS, seed=0, copy_paste=_paster(records, p=0.7))
    sequential = [run(augment, seed) for seed in range(8)]
    again = build_augmentation(FLIPS, seed=0, copy_paste=_paster(records, p=0.7))  # fresh cache
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda seed: run(again, seed), range(8)))
    for a, b in zip(sequential, parallel):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        assert (a.dropped, a.pasted) == (b.dropped, b.pasted)
    assert len({a.image.tobytes() for a in sequential}) > len(sequential) // 2
    assert any(a.pasted for a in sequential) and not all(a.pasted for a in sequential)
    # Without a per-call rng, calls are reproducible from the augmenter's seed.
    runs = [
        [a(image, masks, class_ids).image.tobytes() for _ in range(4)]
        for a in (build_augmentation(FLIPS, seed=s, copy_paste=_paster(records)) for s in (3, 3, 4))
    ]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_p_zero_leaves_the_example_unchanged(tmp_path):
    records = [_photo(tmp_path, "src.png", [QUAD], seed=1)[0]]
    image, masks, class_ids = _target()
    result = CopyPaster(records, CLASSES, p=0.0)(image, masks, class_ids, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(result.image, image)
    np.testing.assert_array_equal(result.masks, masks)
    np.testing.assert_array_equal(result.class_ids, class_ids)
    assert (result.dropped, result.pasted) == (0, 0)
    assert build_copy_paste({"p": 0.0, "max_instances": 3}, records, CLASSES) is None
    assert build_copy_paste(None, records, CLASSES) is None
    assert build_augmentation([], copy_paste=None) is None
    # Attached with p = 0 it changes nothing: the transforms draw exactly what they draw without it.
    plain = build_augmentation(FLIPS, seed=0)
    with_off = build_augmentation(FLIPS, seed=0, copy_paste=CopyPaster(records, CLASSES, p=0.0))
    for seed in range(6):
        a = plain(image, masks, class_ids, rng=np.random.default_rng(seed))
        b = with_off(image, masks, class_ids, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.masks, b.masks)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"p": 1.5}, "p=1.5 must be in"),
        ({"max_instances": 0}, "max_instances=0"),
        ({"scale": [1.2, 0.8]}, "scale="),
        ({"scale": [0, 1]}, "scale="),
        ({"hflip": -0.1}, "hflip=-0.1"),
        ({"min_visible_pixels": 0}, "min_visible_pixels=0"),
    ],
)
def test_bad_settings_are_rejected_with_their_name(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        CopyPaster([], CLASSES, **settings)
    register_configs()
    overrides = [f"augmentation.copy_paste.{key}={value}" for key, value in settings.items()]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["augmentation=copy_paste", *overrides])
    with pytest.raises(ConfigError, match=rf"augmentation\.copy_paste\.{message}"):
        validate(cfg)


def test_config_preset_validates_and_the_pipeline_gets_more_instances(tmp_path):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["augmentation=copy_paste"])
        experiment = compose(config_name="config", overrides=["+experiment=aug_copy_paste"])
        default = compose(config_name="config")
    validate(cfg)
    assert experiment.augmentation == cfg.augmentation and 0 < cfg.augmentation.copy_paste.p < 1
    assert default.augmentation.copy_paste.p == 0  # off unless asked for
    assert build_copy_paste(default.augmentation.copy_paste, [], CLASSES) is None

    records = [
        _photo(
            tmp_path,
            f"im{i}.png",
            [_rect(5 + 8 * i, 4, 20 + 8 * i, 30), _rect(50, 10, 58, 36)][: 1 + i % 2],
            seed=i,
            h=64,
            w=96,
        )[0]
        for i in range(4)
    ]
    as_in_fold = build_copy_paste(cfg.augmentation.copy_paste, records, CLASSES)  # what run_fold passes
    assert as_in_fold.p == cfg.augmentation.copy_paste.p and as_in_fold.records == records
    paster = build_copy_paste({**cfg.augmentation.copy_paste, "p": 1.0}, records, CLASSES)
    counts = {}
    for name, augment in [
        ("without", build_augmentation(FLIPS, seed=0)),
        ("with", build_augmentation(FLIPS, seed=0, copy_paste=paster)),
    ]:
        dataset = make_dataset(records, CONFIG, CLASSES, augment=augment, seed=0, repeat=False)
        ids = np.concatenate([batch["input_gt_class_ids"].numpy() for batch in dataset])
        counts[name] = (ids > 0).sum(axis=1).mean()
    assert counts["without"] == 1.5 and counts["with"] > counts["without"] + 0.5
