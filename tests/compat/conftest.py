"""Fixtures of the bookseg.compat tests: a tiny Config, an in-memory Dataset, and one run of the sample script.

`sample_run` runs samples/bookshelf/bookshelf.py once per session, as a user would (train heads for one
epoch, then all layers for one more, then `detect --weights=last`), on 10 synthetic 64 x 96 shelves with
the sample's tiny CPU config and MLflow logging to a temporary sqlite store; the model tests read its
log directory instead of training again.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bookseg.compat import utils
from bookseg.compat.config import Config

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "bookshelf" / "bookshelf.py"


class TinyConfig(Config):
    """A 64 px model with bookseg's tiny backbone (seconds per step on a CPU)."""

    NAME = "tiny"
    NUM_CLASSES = 3
    IMAGES_PER_GPU = 2
    BACKBONE = "tiny"
    NORM = "batch_norm"
    TINY_CHANNELS = (8, 16, 32, 64)
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 64
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    TOP_DOWN_PYRAMID_SIZE = 32
    RPN_CONV_CHANNELS = 32
    FPN_CLASSIF_FC_LAYERS_SIZE = 64
    MASK_HEAD_CHANNELS = 16
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    PRE_NMS_LIMIT = 500
    POST_NMS_ROIS_TRAINING = 100
    POST_NMS_ROIS_INFERENCE = 50
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 8
    MINI_MASK_SHAPE = (28, 28)
    DETECTION_MAX_INSTANCES = 10
    DETECTION_MIN_CONFIDENCE = 0.0


class ShapesDataset(utils.Dataset):
    """Rectangles ("books", class 1) and squares ("boxes", class 2) drawn in memory; no files."""

    def load_shapes(self, count: int, height: int = 48, width: int = 80, source: str = "shapes"):
        self.add_class(source, 1, "book")
        self.add_class(source, 2, "box")
        rng = np.random.default_rng(0)
        for i in range(count):
            shapes = []
            for k in range(int(rng.integers(1, 4))):
                y1, x1 = int(rng.integers(0, height - 20)), int(rng.integers(0, width - 20))
                shapes.append(
                    (1 + k % 2, y1, x1, y1 + int(rng.integers(8, 20)), x1 + int(rng.integers(4, 20)))
                )
            self.add_image(source, image_id=f"img{i}", path=None, height=height, width=width, shapes=shapes)

    def load_image(self, image_id):
        info = self.image_info[image_id]
        image = np.full((info["height"], info["width"], 3), 40, np.uint8)
        for class_id, y1, x1, y2, x2 in info["shapes"]:
            image[y1:y2, x1:x2] = (200, 60 * class_id, 30)
        return image

    def load_mask(self, image_id):
        info = self.image_info[image_id]
        masks = np.zeros((info["height"], info["width"], len(info["shapes"])), bool)
        for k, (_, y1, x1, y2, x2) in enumerate(info["shapes"]):
            masks[y1:y2, x1:x2, k] = True
        class_ids = np.array([s[0] for s in info["shapes"]], np.int32)
        return masks, class_ids

    def image_reference(self, image_id):
        return self.image_info[image_id]["id"]


@pytest.fixture
def shapes() -> ShapesDataset:
    dataset = ShapesDataset()
    dataset.load_shapes(4)
    dataset.prepare()
    return dataset


def load_sample_module():
    spec = importlib.util.spec_from_file_location("bookshelf_sample", SAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class SampleRun:
    module: object
    root: Path
    logs: Path
    via: Path
    figure: Path
    tracking_uri: str
    train_rc: int
    detect_rc: int
    output: str


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> SampleRun:
    import keras

    from bookseg.data.synthetic import generate_shelves

    root = tmp_path_factory.mktemp("sample_run")
    via = generate_shelves(root / "shelves", 10, seed=0, image_size=(64, 96))
    logs, figure = root / "logs", root / "detection.png"
    uri = f"sqlite:///{root / 'mlflow.db'}"
    module = load_sample_module()
    keras.utils.set_random_seed(0)
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    import contextlib
    import io

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            train_rc = module.main(
                [
                    "train",
                    "--tiny",
                    f"--dataset={via}",
                    "--heads-epochs=1",
                    "--all-epochs=1",
                    f"--logs={logs}",
                ]
            )
        os.environ.pop("MLFLOW_TRACKING_URI")
        with contextlib.redirect_stdout(buffer):
            detect_rc = module.main(
                [
                    "detect",
                    "--tiny",
                    f"--dataset={via}",
                    "--weights=last",
                    f"--logs={logs}",
                    f"--out={figure}",
                ]
            )
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return SampleRun(module, root, logs, via, figure, uri, train_rc, detect_rc, buffer.getvalue())
