"""`bookseg predict`: image discovery, the output files, and models resolved from a real MLflow run.

Three kinds of model are used:

* an *oracle* that returns the true books of the synthetic shelves (known masks, so the COCO JSON must
  score AP 1.0 against the ground truth and the VIA polygons must match book-shaped masks);
* an untrained, seeded tiny `MaskRCNN` with min_confidence 0 (real `detect` output, noisy masks);
* the weights of a real `python -m bookseg.run +experiment=smoke` job, run once for this module.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bookseg.data.images import load_image_rgb
from bookseg.data.readers import load_dataset
from bookseg.data.records import boxes_from_masks, rasterize_polygon
from bookseg.data.synthetic import generate_shelves
from bookseg.evaluation.coco_eval import records_to_coco
from bookseg.inference.predict import CHUNK_PIXELS, PredictSummary, find_images, predict_paths, relative_names
from bookseg.inference.predict_outputs import overlay_names


def _decode(rle: dict) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_util.decode(rle).astype(bool)


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class OracleModel:
    """`detect` that returns the true instances of known images (scores 0.99, 0.98, ... in mask order)."""

    def __init__(self, masks_by_image: dict[str, np.ndarray], images_per_batch: int = 2):
        self.config = SimpleNamespace(images_per_batch=images_per_batch)
        self.masks_by_image = masks_by_image
        self.calls: list[list[tuple[int, int]]] = []

    def detect(self, images, *, min_confidence=None, max_instances=None):
        self.calls.append([image.shape[:2] for image in images])
        results = []
        for image in images:
            masks = self.masks_by_image[_key(image)]
            scores = 0.99 - 0.01 * np.arange(masks.shape[-1], dtype=np.float32)
            keep = scores >= (min_confidence or 0.0)
            if max_instances is not None:
                keep &= np.arange(len(scores)) < max_instances
            masks = masks[..., keep]
            results.append(
                {
                    "rois": boxes_from_masks(masks),
                    "class_ids": np.ones(masks.shape[-1], np.int32),
                    "scores": scores[keep],
                    "masks": masks,
                }
            )
        return results


@pytest.fixture(scope="module")
def shelves(tmp_path_factory):
    """Three synthetic shelves copied into photos/ (one at the top, two in sub/, one with an upper-case
    suffix) next to a text file and a hidden image; returns (photos dir, records in sorted path order)."""
    root = tmp_path_factory.mktemp("shelves")
    dataset = load_dataset(generate_shelves(root / "generated", 3, seed=5, image_size=(128, 160)))
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    targets = [photos / "a_shelf.png", photos / "sub" / "b_shelf.png", photos / "sub" / "c_shelf.PNG"]
    for record, target in zip(dataset.records, targets):
        shutil.copy(record.path, target)
        record.path = target
    (photos / "notes.txt").write_text("not an image")
    shutil.copy(targets[0], photos / ".hidden.png")
    return photos, dataset.records


@pytest.fixture(scope="module")
def oracle(shelves):
    _, records = shelves
    return OracleModel({_key(load_image_rgb(r.path)): r.masks() for r in records})


@pytest.fixture(scope="module")
def oracle_run(shelves, oracle, tmp_path_factory):
    photos, _ = shelves
    out = tmp_path_factory.mktemp("oracle") / "out"
    summary = predict_paths(oracle, ["book"], [photos], out, min_confidence=0.0, progress=False)
    return out, summary


# ---------------------------------------------------------------------------------------------- inputs
def test_find_images_recurses_sorts_and_skips_non_images(shelves, tmp_path):
    photos, _ = shelves
    found = find_images([photos / "sub", photos, photos / "a_shelf.png"])
    assert found == [photos / "a_shelf.png", photos / "sub" / "b_shelf.png", photos / "sub" / "c_shelf.PNG"]
    assert relative_names(found) == ["a_shelf.png", "sub/b_shelf.png", "sub/c_shelf.PNG"]
    with pytest.raises(ValueError, match="notes.txt: not an image"):
        find_images([photos / "notes.txt"])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        find_images([photos / "missing.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        find_images([tmp_path / "empty"])


def test_overlay_names_keep_folders_and_separate_same_stems():
    assert overlay_names(["a.png", "sub/b.jpg", "x.png", "x.jpg"]) == [
        "a.jpg",
        "sub/b.jpg",
        "x.png.jpg",
        "x.jpg.jpg",
    ]


# --------------------------------------------------------------------------------- outputs (oracle model)
def test_counts_csv_has_one_row_per_image_with_the_known_books(shelves, oracle_run):
    _, records = shelves
    out, summary = oracle_run
    with open(out / "counts.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = [
        (name, r.width, r.height, len(r.instances))
        for name, r in zip(["a_shelf.png", "sub/b_shelf.png", "sub/c_shelf.PNG"], records)
    ]
    assert [
        (row["file"], int(row["width"]), int(row["height"]), int(row["books"])) for row in rows
    ] == expected
    assert summary.images == expected
    assert summary.n_books == sum(len(r.instances) for r in records) > 0
    assert summary.skipped == [] and summary.empty_masks_dropped == 0
    # VIA's Project > Save downloads <project name>.json: the hint names that file, not the unchanged copy.
    project_name = json.loads((out / "via_project.json").read_text())["_via_settings"]["project"]["name"]
    assert f"data=via data.path=<Downloads>/{project_name}.json\n" in summary.text()
    assert f"data.path={out / 'via_project.json'}" not in summary.text()
    assert f"image folder, {shelves[0]}, so no data.images_dir" in summary.text()


def test_a_model_that_finds_nothing_does_not_ask_for_corrections(tmp_path):
    summary = PredictSummary(out_dir=tmp_path, images_root=tmp_path)
    summary.images = [("a.png", 64, 32, 0), ("b.png", 64, 32, 0)]
    text = summary.text()
    assert text.startswith("0 books in 2 images")
    assert "found no book" in text and "Correct the outlines" not in text


def test_coco_results_load_against_ground_truth_and_score_perfectly(shelves, oracle_run):
    _, records = shelves
    out, summary = oracle_run
    results = json.loads((out / "predictions_coco.json").read_text())
    assert len(results) == summary.n_books
    assert {"image_id", "category_id", "segmentation", "bbox", "score"} <= set(results[0])
    assert isinstance(results[0]["segmentation"]["counts"], str)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = records_to_coco(records, ["book"])  # image ids 1..N in the same (sorted) order
        gt.createIndex()
        stats = {}
        for iou_type in ("segm", "bbox"):
            evaluation = COCOeval(gt, gt.loadRes(str(out / "predictions_coco.json")), iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            stats[iou_type] = evaluation.stats[0]
        skeleton = COCO(str(out / "images.json"))
        loaded = skeleton.loadRes(str(out / "predictions_coco.json"))
    assert stats == {"segm": pytest.approx(1.0), "bbox": pytest.approx(1.0)}
    assert [img["file_name"] for img in skeleton.dataset["images"]] == [
        "a_shelf.png",
        "sub/b_shelf.png",
        "sub/c_shelf.PNG",
    ]
    assert len(loaded.getAnnIds()) == summary.n_books


def test_via_project_round_trips_through_the_reader(shelves, oracle_run):
    _, records = shelves
    out, summary = oracle_run
    # No images_dir: the reader follows the project's default_filepath to the photos' folder.
    dataset = load_dataset(out / "via_project.json", class_attribute="name")
    assert dataset.class_names == ["book"] and dataset.num_instances == summary.n_books
    assert [Path(r.path) for r in dataset.records] == [Path(r.path).resolve() for r in records]
    ious = []
    for read, truth in zip(dataset.records, records):
        assert len(read.instances) == len(truth.instances)
        for instance, mask in zip(read.instances, np.moveaxis(truth.masks(), -1, 0)):
            drawn = rasterize_polygon(instance.polygon, truth.height, truth.width)
            ious.append(np.count_nonzero(drawn & mask) / np.count_nonzero(drawn | mask))
    # A mask in several parts (a book split by an object in front) keeps only its largest part.
    assert min(ious) > 0.8 and np.median(ious) > 0.97, sorted(ious)[:5]
    project = json.loads((out / "via_project.json").read_text())
    first = next(iter(project["_via_img_metadata"].values()))
    assert [r["region_attributes"]["score"] for r in first["regions"][:2]] == ["0.9900", "0.9800"]


def test_overlays_are_written_at_image_size(shelves, oracle_run):
    _, records = shelves
    out, _ = oracle_run
    for name, record in zip(["a_shelf.jpg", "sub/b_shelf.jpg", "sub/c_shelf.jpg"], records):
        overlay = load_image_rgb(out / "overlays" / name)
        assert overlay.shape == (record.height, record.width, 3)
        original = load_image_rgb(record.path)
        assert np.abs(overlay.astype(int) - original).mean() > 5  # books are filled and outlined


def test_existing_outputs_are_not_overwritten(shelves, oracle, oracle_run):
    photos, _ = shelves
    out, _ = oracle_run
    before = (out / "counts.csv").stat().st_mtime_ns
    calls = len(oracle.calls)
    with pytest.raises(FileExistsError, match="--overwrite"):
        predict_paths(oracle, ["book"], [photos], out, progress=False)
    assert (out / "counts.csv").stat().st_mtime_ns == before and len(oracle.calls) == calls
    again = predict_paths(
        oracle, ["book"], [photos / "sub"], out / "again", min_confidence=0.975, progress=False
    )
    assert [row[3] for row in again.images] == [2, 2]  # only scores 0.99 and 0.98 pass
    replaced = predict_paths(
        oracle,
        ["book"],
        [photos / "sub"],
        out / "again",
        overwrite=True,
        min_confidence=0.965,
        progress=False,
    )
    assert [row[3] for row in replaced.images] == [3, 3]
    with open(out / "again" / "counts.csv", newline="") as f:
        assert [int(row["books"]) for row in csv.DictReader(f)] == [3, 3]


def test_unreadable_image_is_skipped_with_a_warning(shelves, oracle, tmp_path):
    photos, _ = shelves
    folder = tmp_path / "in"
    shutil.copytree(photos / "sub", folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.warns(UserWarning, match="broken.jpg: cannot read the image"):
        summary = predict_paths(oracle, ["book"], [folder], tmp_path / "out", progress=False)
    assert [Path(p).name for p, _ in summary.skipped] == ["broken.jpg"]
    assert [row[0] for row in summary.images] == ["b_shelf.png", "c_shelf.PNG"]
    assert "1 image(s) could not be read" in summary.text()
    assert not (tmp_path / "out" / "overlays" / "broken.jpg").exists()


def test_large_photo_is_processed_alone_at_full_size(shelves, tmp_path):
    _, records = shelves
    record = records[0]
    big = cv2.resize(load_image_rgb(record.path), (4000, 3000), interpolation=cv2.INTER_NEAREST)
    masks = np.stack(
        [
            cv2.resize(m.astype(np.uint8), (4000, 3000), interpolation=cv2.INTER_NEAREST)
            for m in np.moveaxis(record.masks(), -1, 0)
        ],
        axis=-1,
    ).astype(bool)
    small = load_image_rgb(records[1].path)
    model = OracleModel({_key(big): masks, _key(small): records[1].masks()}, images_per_batch=4)
    cv2.imwrite(
        str(tmp_path / "0_big.png"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]
    )
    shutil.copy(records[1].path, tmp_path / "1_small.png")
    summary = predict_paths(model, ["book"], [tmp_path], tmp_path / "out", max_instances=3, progress=False)
    assert big.shape[0] * big.shape[1] + small.shape[0] * small.shape[1] > CHUNK_PIXELS
    assert model.calls == [[(3000, 4000)], [small.shape[:2]]]  # the pixel budget split the batch of 4
    assert summary.images[0] == ("0_big.png", 4000, 3000, 3)
    assert load_image_rgb(tmp_path / "out" / "overlays" / "0_big.jpg").shape == (3000, 4000, 3)
    results = json.loads((tmp_path / "out" / "predictions_coco.json").read_text())
    first = _decode(results[0]["segmentation"])
    assert first.shape == (3000, 4000) and np.array_equal(first, masks[..., 0])


# ------------------------------------------------------------------------------ a real (untrained) model
@pytest.fixture(scope="module")
def untrained_model():
    import keras

    from bookseg.mrcnn.config import MrcnnConfig
    from bookseg.mrcnn.model import MaskRCNN

    keras.utils.set_random_seed(0)
    return MaskRCNN(
        MrcnnConfig(
            backbone="tiny",
            tiny_channels=(8, 16, 32, 64),
            num_classes=2,
            image_min_dim=128,
            image_max_dim=128,
            top_down_pyramid_size=32,
            fpn_classif_fc_layers_size=64,
            rpn_conv_channels=32,
            mask_head_channels=16,
            rpn_anchor_scales=(8, 16, 32, 64, 128),
            pre_nms_limit=1000,
            post_nms_rois_inference=100,
            detection_max_instances=12,
            images_per_batch=2,
        )
    )


def test_real_model_outputs_agree_with_detect(shelves, untrained_model, tmp_path):
    photos, records = shelves
    summary = predict_paths(
        untrained_model, ["book"], [photos], tmp_path / "out", min_confidence=0.0, progress=False
    )
    detections = untrained_model.detect([load_image_rgb(r.path) for r in records], min_confidence=0.0)
    non_empty = [int(d["masks"].any(axis=(0, 1)).sum()) for d in detections]
    assert [row[3] for row in summary.images] == non_empty and sum(non_empty) > 0
    assert summary.empty_masks_dropped == sum(len(d["scores"]) for d in detections) - sum(non_empty)
    results = json.loads((tmp_path / "out" / "predictions_coco.json").read_text())
    assert len(results) == sum(non_empty)
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = COCO(str(tmp_path / "out" / "images.json")).loadRes(
            str(tmp_path / "out" / "predictions_coco.json")
        )
    decoded = _decode(loaded.loadAnns(loaded.getAnnIds(imgIds=[1]))[0]["segmentation"])
    first = detections[0]["masks"][..., detections[0]["masks"].any(axis=(0, 1))][..., 0]
    assert np.array_equal(decoded, first)
    via = load_dataset(tmp_path / "out" / "via_project.json", images_dir=photos)
    assert [len(r.instances) for r in via.records] == non_empty


# ---------------------------------------------------------------------- models from a real MLflow run
@pytest.fixture(scope="module")
def smoke_run(smoke_sweep):
    """A real `python -m bookseg.run +experiment=smoke` job: the session's smoke sweep (tests/conftest.py)."""
    parent = smoke_sweep.parents[0]
    return SimpleNamespace(
        root=smoke_sweep.root,
        uri=smoke_sweep.uri,
        parent=parent,
        children=smoke_sweep.children[parent.info.run_id],
        images=smoke_sweep.images,
        client=smoke_sweep.client(),
    )


def _first_kernel(model) -> np.ndarray:
    return np.asarray(model.backbone_fpn.get_layer("tiny_c1_conv1").kernel)


def test_parent_run_resolves_to_the_best_fold_and_its_config(smoke_run):
    from bookseg.inference.trained_model import load_from_run

    trained = load_from_run(smoke_run.parent.info.run_id, tracking_uri=smoke_run.uri)
    scores = {k: c.data.metrics["mask_ap50"] for k, c in smoke_run.children.items()}
    best = min(scores, key=lambda k: (0 if math.isfinite(scores[k]) else 1, -scores[k], k))
    assert f"fold {best} " in trained.source
    assert trained.class_names == ["book"]
    assert trained.cfg.model.name == "tiny" and trained.model.config.image_max_dim == 128
    other = 1 - best
    by_child = load_from_run(smoke_run.children[other].info.run_id, tracking_uri=smoke_run.uri)
    assert f"fold {other} " in by_child.source
    # The two folds were trained separately: different weights, each from its own artifact.
    assert not np.allclose(_first_kernel(trained.model), _first_kernel(by_child.model))


def test_run_resolution_errors_name_the_problem(smoke_run):
    from bookseg.inference.trained_model import ModelSourceError, load_from_run

    with pytest.raises(ModelSourceError, match="no fold 7"):
        load_from_run(smoke_run.parent.info.run_id, fold=7, tracking_uri=smoke_run.uri)
    with pytest.raises(ModelSourceError, match="is fold 0, not fold 1"):
        load_from_run(smoke_run.children[0].info.run_id, fold=1, tracking_uri=smoke_run.uri)
    with pytest.raises(ModelSourceError, match="no MLflow run"):
        load_from_run("0123456789abcdef0123456789abcdef", tracking_uri=smoke_run.uri)


def test_cli_predict_with_a_run_and_with_a_weights_file(smoke_run, tmp_path, capsys):
    import mlflow

    from bookseg.cli import main

    parent = smoke_run.parent.info.run_id
    code = main(
        [
            "predict",
            str(smoke_run.images[0].parent),
            "--run",
            parent,
            "--fold",
            "1",
            "--out",
            str(tmp_path / "by_run"),
            "--tracking-uri",
            smoke_run.uri,
            "--min-confidence",
            "0",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"MLflow run {parent} fold 1 " in printed
    with open(tmp_path / "by_run" / "counts.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["file"] for row in rows] == [p.name for p in smoke_run.images]

    child = smoke_run.children[1].info.run_id
    weights = mlflow.artifacts.download_artifacts(
        run_id=child,
        artifact_path="weights/mask_rcnn_fold1.weights.h5",
        dst_path=str(tmp_path),
        tracking_uri=smoke_run.uri,
    )
    config = mlflow.artifacts.download_artifacts(
        run_id=parent, artifact_path="config.yaml", dst_path=str(tmp_path), tracking_uri=smoke_run.uri
    )
    code = main(
        [
            "predict",
            str(smoke_run.images[0]),
            "--weights",
            weights,
            "--config",
            config,
            "--out",
            str(tmp_path / "by_weights"),
            "--min-confidence",
            "0",
            "--no-progress",
        ]
    )
    assert code == 0
    by_weights = (tmp_path / "by_weights" / "predictions_coco.json").read_text()
    by_run = json.loads((tmp_path / "by_run" / "predictions_coco.json").read_text())
    assert json.loads(by_weights) == [r for r in by_run if r["image_id"] == 1]

    code = main(
        [
            "predict",
            str(smoke_run.images[0]),
            "--run",
            parent,
            "--out",
            str(tmp_path / "by_run"),
            "--tracking-uri",
            smoke_run.uri,
            "--no-progress",
        ]
    )
    assert code == 2 and "--overwrite" in capsys.readouterr().err


def test_precision_override_runs_a_float32_run_in_bfloat16(smoke_run, tmp_path, capsys):
    from bookseg.cli import main
    from bookseg.inference.trained_model import load_from_run

    parent = smoke_run.parent.info.run_id
    trained = load_from_run(parent, fold=0, tracking_uri=smoke_run.uri, precision="mixed_bfloat16")
    assert trained.cfg.model.precision == "float32"  # what the run was trained with
    assert trained.model.config.precision == "mixed_bfloat16"
    assert trained.model.mask_head.get_layer("mrcnn_mask_conv1").compute_dtype == "bfloat16"
    same = load_from_run(parent, fold=0, tracking_uri=smoke_run.uri)
    np.testing.assert_array_equal(_first_kernel(trained.model), _first_kernel(same.model))

    code = main(
        [
            "predict",
            str(smoke_run.images[0]),
            "--run",
            parent,
            "--out",
            str(tmp_path / "bf16"),
            "--tracking-uri",
            smoke_run.uri,
            "--precision",
            "mixed_bfloat16",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "bf16" / "counts.csv").is_file()


def test_configs_logged_before_model_norm_still_load(tmp_path):
    """A run logged with `model.train_bn` and no `model.mask_pool_size` loads as the same model."""
    from omegaconf import OmegaConf

    from bookseg.inference.trained_model import ModelSourceError, default_config, load_config

    old = OmegaConf.to_container(default_config(), resolve=False)
    del old["model"]["norm"], old["model"]["mask_pool_size"]
    for train_bn, norm in ((False, "frozen_bn"), (None, "batch_norm")):
        old["model"]["train_bn"] = train_bn
        OmegaConf.save(old, tmp_path / "config.yaml")
        loaded = load_config(tmp_path / "config.yaml")
        assert (loaded.model.norm, loaded.model.mask_pool_size, "train_bn" in loaded.model) == (
            norm,
            14,
            False,
        )
    old["model"]["train_bn"] = True
    OmegaConf.save(old, tmp_path / "config.yaml")
    with pytest.raises(ModelSourceError, match="train_bn=true"):
        load_config(tmp_path / "config.yaml")
