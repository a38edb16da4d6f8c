"""`bookseg export`: the SavedModel reproduces `MaskRCNN.detect`, and its in-graph pre/post-processing
reproduces `resize_image` / `mold_image` / `unmold_detections`.

The model is the Hydra `tiny` preset, untrained but seeded, exported with min_confidence 0 so that it
returns detections; the weights go through a `.weights.h5` file and the CLI, as a user's would.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from bookseg.cli import main
from bookseg.config import factory
from bookseg.data.images import load_image_rgb
from bookseg.data.synthetic import generate_shelves
from bookseg.inference.export import METADATA_FILE, DetectorModule
from bookseg.inference.trained_model import default_config
from bookseg.mrcnn.images import compose_image_meta, mold_image, resize_image, unmold_detections
from bookseg.mrcnn.model import MaskRCNN

MAX_INSTANCES = 15


def _export(root, out, *options) -> int:
    """`bookseg export` of the weights and config.yaml saved in `root` into `out`; the exit code."""
    return main(
        [
            "export",
            "--weights",
            str(root / "model.weights.h5"),
            "--config",
            str(root / "config.yaml"),
            "--out",
            str(out),
            *options,
        ]
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cfg = default_config(["model=tiny", "anchors=tiny"])
    keras.utils.set_random_seed(0)
    model = MaskRCNN(factory.mrcnn_config(cfg, num_classes=2))
    model.save_weights(str(root / "model.weights.h5"))
    OmegaConf.save(cfg, root / "config.yaml")
    assert _export(root, root / "saved", "--min-confidence", "0", "--max-instances", str(MAX_INSTANCES)) == 0
    shelves = generate_shelves(root / "shelves", 1, seed=2, image_size=(256, 256)).parent
    photo = load_image_rgb(shelves / "images" / "shelf_0000.png")
    return model, root, photo


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


@pytest.mark.parametrize("size", [128, 256], ids=["no_resize", "halved"])
def test_saved_model_matches_detect(setup, size):
    model, root, photo = setup
    # 128 px goes in as is, 256 px is halved: both are resized bit-exactly like OpenCV (see test below).
    image = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA) if size != 256 else photo
    detector = tf.saved_model.load(str(root / "saved")).signatures["serving_default"]
    out = {k: v.numpy() for k, v in detector(image=tf.constant(image)).items()}
    ref = model.detect([image], min_confidence=0.0, max_instances=MAX_INSTANCES)[0]

    n = len(ref["scores"])
    assert n > 0 and int(out["num_detections"]) == n
    assert out["boxes"].dtype == np.float32 and out["boxes"].shape == (n, 4)
    assert out["masks"].dtype == np.uint8 and out["masks"].shape == (n, size, size)
    np.testing.assert_allclose(out["boxes"], ref["rois"], atol=1.0)
    np.testing.assert_allclose(out["scores"], ref["scores"], atol=1e-4)
    np.testing.assert_array_equal(out["class_ids"], ref["class_ids"])
    ious = [_mask_iou(out["masks"][k].astype(bool), ref["masks"][..., k]) for k in range(n)]
    assert min(ious) > 0.95, ious


def test_export_metadata_and_refusal_to_overwrite(setup, capsys):
    _, root, _ = setup
    metadata = json.loads((root / "saved" / METADATA_FILE).read_text())
    assert metadata["class_names"] == ["book"]
    assert metadata["min_confidence"] == 0.0 and metadata["max_instances"] == MAX_INSTANCES
    assert metadata["config"]["model"]["name"] == "tiny" and "model.weights.h5" in metadata["source"]
    assert _export(root, root / "saved") == 2 and "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("shape", [(200, 150), (97, 301), (60, 40), (3000, 4000)])
def test_in_graph_molding_matches_resize_image(setup, shape):
    model, _, photo = setup
    image = cv2.resize(photo, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    resized, window, scale, _ = resize_image(image, model.config)
    expected = mold_image(resized, model.config)
    expected_meta = compose_image_meta(0, image.shape, resized.shape, window, scale, np.ones(2))
    molded, meta = DetectorModule(model).mold(tf.constant(image))
    difference = np.abs(molded.numpy() - expected)
    # OpenCV's bilinear weights are 11-bit fixed point: a pixel may be off by one level.
    assert difference.max() <= 1.0 + 1e-4 and np.mean(difference > 1e-4) < 0.15
    np.testing.assert_array_equal(meta.numpy(), expected_meta)


@pytest.mark.parametrize("shape", [(200, 150), (97, 301), (3000, 4000)])
def test_in_graph_unmolding_matches_unmold_detections(setup, shape):
    model, _, _ = setup
    config = model.config
    rng = np.random.default_rng(sum(shape))
    _, window, scale, _ = resize_image(np.zeros((*shape, 3), np.uint8), config)
    molded_shape = (config.image_max_dim, config.image_max_dim, 3)
    meta = compose_image_meta(0, (*shape, 3), molded_shape, window, scale, np.ones(2))
    wy1, wx1, wy2, wx2 = (np.asarray(window, float) - [0, 0, 1, 1]) / (config.image_max_dim - 1)
    m = 8
    y = np.sort(rng.uniform(wy1, wy2, size=(m, 2)), axis=1)
    x = np.sort(rng.uniform(wx1, wx2, size=(m, 2)), axis=1)
    detections = np.zeros((m + 2, 6), np.float32)  # two padding rows at the end
    detections[:m, :4] = np.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], axis=1)
    detections[0, :4] = [wy1 - 0.2, wx1, wy1 - 0.1, wx1 + 0.1]  # above the photo: no area, dropped by both
    detections[:m, 4] = 1
    detections[:m, 5] = np.linspace(0.9, 0.5, m)
    blobs = cv2.GaussianBlur(rng.uniform(size=(28, 28 * (m + 2))).astype(np.float32), (0, 0), 3)
    masks = np.stack(np.split((blobs - blobs.min()) / np.ptp(blobs), m + 2, axis=1))[..., None]
    masks = np.concatenate([np.zeros_like(masks), masks], axis=-1).astype(np.float32)  # [M, 28, 28, 2]

    expected = unmold_detections(detections, masks, shape, molded_shape, window)
    out = DetectorModule(model).unmold(
        tf.constant(detections), tf.constant(masks), tf.constant(shape), tf.constant(meta)
    )
    n = len(expected["scores"])
    assert n == m - 1 and int(out["num_detections"]) == n
    np.testing.assert_array_equal(out["boxes"].numpy(), expected["rois"])
    np.testing.assert_allclose(out["scores"].numpy(), expected["scores"])
    full = out["masks"].numpy()
    assert full.shape == (n, *shape)
    ious = [_mask_iou(full[k].astype(bool), expected["masks"][..., k]) for k in range(n)]
    assert min(ious) > 0.95, ious


def test_no_detection_gives_empty_outputs_of_the_photo_size(setup):
    model, _, _ = setup
    meta = compose_image_meta(0, (90, 70, 3), (128, 128, 3), (0, 14, 128, 114), 128 / 90, np.ones(2))
    out = DetectorModule(model).unmold(
        tf.zeros([MAX_INSTANCES, 6]),
        tf.zeros([MAX_INSTANCES, 28, 28, 2]),
        tf.constant([90, 70]),
        tf.constant(meta, tf.float32),
    )
    assert int(out["num_detections"]) == 0
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 90, 70)


def test_export_rejects_non_square_resize_mode(setup):
    model, _, _ = setup
    with pytest.raises(ValueError, match="square"):
        DetectorModule(SimpleNamespace(config=model.config.replace(image_resize_mode="pad64")))


def test_export_in_mixed_bfloat16_matches_detect_in_bfloat16(setup, tmp_path):
    model, root, photo = setup
    options = (
        "--min-confidence",
        "0",
        "--max-instances",
        str(MAX_INSTANCES),
        "--precision",
        "mixed_bfloat16",
    )
    assert _export(root, tmp_path / "saved_bf16", *options) == 0
    detector = tf.saved_model.load(str(tmp_path / "saved_bf16")).signatures["serving_default"]
    out = {k: v.numpy() for k, v in detector(image=tf.constant(photo)).items()}
    bf16 = MaskRCNN(model.config.replace(precision="mixed_bfloat16"))
    bf16.set_weights(model.get_weights())
    ref = bf16.detect([photo], min_confidence=0.0, max_instances=MAX_INSTANCES)[0]
    n = len(ref["scores"])
    assert n > 0 and int(out["num_detections"]) == n
    assert out["scores"].dtype == np.float32 and out["masks"].shape == (n, 256, 256)
    np.testing.assert_allclose(out["scores"], ref["scores"], atol=1e-3)
    # An untrained model ties scores, and tied detections may come out in either order.
    for box in ref["rois"]:
        assert np.abs(out["boxes"] - box).max(axis=1).min() <= 1.0, box
