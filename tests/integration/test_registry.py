"""`tracking.register_model`: the job's model registered in MLflow as a pyfunc that outlines books.

Unit tests: the response records, the input decoding, and a registered model made by `register_job_model`
from a hand-built job (an untrained, seeded `tiny` model as its final model, so no training) loaded with
`mlflow.pyfunc.load_model` and compared with `MaskRCNN.detect`.

End to end (about 1-2 minutes, in the default suite because it is what the feature promises): a real job
through the CLI with `tracking.register_model=books`, then the real scoring server (`mlflow models serve
--env-manager local`) answering a curl-style JSON request the same way.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from pycocotools import mask as mask_util

from bookseg.data.images import load_image_rgb
from bookseg.data.records import rasterize_polygon
from bookseg.data.synthetic import generate_shelves, synthetic_dataset_path
from bookseg.inference.predict_outputs import detection_polygon
from bookseg.inference.registry import (
    OUTPUT_COLUMNS,
    check_registration,
    decode_image,
    detection_rows,
    image_frame,
    invocation_request,
    register_job_model,
    summary_tags,
)
from bookseg.inference.trained_model import load_from_run
from tests.servers import free_port, stop_process_group

SUMMARY = {
    "cv/mask_ap50_mean": 0.5,
    "cv/mask_ap50_std": 0.1,
    "cv/n_folds": 2.0,
    "test/mask_ap50_mean": 0.25,
    "test/mask_ap50_std": 0.05,
    "final/test/mask_ap50": 0.75,
}


# --- response records and request decoding ---------------------------------------------------------------


def test_detection_rows_give_coco_boxes_rle_and_polygons():
    masks = np.zeros((20, 30, 2), bool)
    masks[2:10, 5:9, 0] = True  # 4 wide, 8 high at x=5, y=2
    result = {
        "rois": np.array([[2, 5, 10, 9], [0, 0, 1, 1]], np.int32),
        "class_ids": np.array([2, 1], np.int32),
        "scores": np.array([0.9, 0.4], np.float32),
        "masks": masks,
    }
    rows = detection_rows(3, result, ["book", "magazine"])
    assert [list(r) for r in rows] == [list(OUTPUT_COLUMNS)] * 2
    first, empty = rows
    assert first["image_index"] == 3 and first["class_name"] == "magazine" and empty["class_name"] == "book"
    assert first["bbox"] == [5.0, 2.0, 4.0, 8.0]  # x, y, width, height
    assert first["score"] == pytest.approx(0.9)
    assert first["segmentation"]["size"] == [20, 30] and isinstance(first["segmentation"]["counts"], str)
    np.testing.assert_array_equal(mask_util.decode(first["segmentation"]).astype(bool), masks[..., 0])
    polygon = np.array(first["polygon"]).reshape(-1, 2)
    np.testing.assert_array_equal(rasterize_polygon(polygon, 20, 30), masks[..., 0])
    assert empty["polygon"] is None and not mask_util.decode(empty["segmentation"]).any()
    json.dumps(rows)  # what the scoring server sends


def test_decode_image_reads_png_and_jpeg_and_names_bad_rows(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (12, 16, 3), np.uint8)
    png = base64.b64encode(cv2.imencode(".png", image)[1].tobytes()).decode()
    np.testing.assert_array_equal(decode_image(png, 0, tmp_path), image[..., ::-1])  # cv2 wrote BGR
    wrapped = "\n".join(png[i : i + 76] for i in range(0, len(png), 76))  # `base64` without -w0
    np.testing.assert_array_equal(decode_image(wrapped, 0, tmp_path), image[..., ::-1])
    jpeg = base64.b64encode(cv2.imencode(".jpg", image)[1].tobytes()).decode()
    assert decode_image(jpeg, 1, tmp_path).shape == (12, 16, 3)
    with pytest.raises(MlflowException, match="image 4: not valid base64"):
        decode_image("not base64!", 4, tmp_path)
    with pytest.raises(MlflowException, match=r"image 5: cannot decode the image \(5 bytes\)") as error:
        decode_image(base64.b64encode(b"hello").decode(), 5, tmp_path)
    assert str(tmp_path) not in error.value.message
    assert list(tmp_path.iterdir()) == []


def test_registration_settings_are_checked_before_training():
    check_registration(OmegaConf.create({"register_model": None, "log_weights": False}))
    check_registration(OmegaConf.create({"register_model": "books", "log_weights": True}))
    with pytest.raises(ValueError, match="non-empty model name"):
        check_registration(OmegaConf.create({"register_model": " ", "log_weights": True}))
    with pytest.raises(ValueError, match="tracking.log_weights=true"):
        check_registration(OmegaConf.create({"register_model": "books", "log_weights": False}))


def test_summary_tags_keep_means_and_final_test_metrics():
    assert summary_tags(SUMMARY) == {
        "cv/mask_ap50_mean": "0.5000",
        "cv/n_folds": "2.0000",
        "final/test/mask_ap50": "0.7500",
        "test/mask_ap50_mean": "0.2500",
    }
    assert summary_tags({"cv/mask_ap_mean": float("nan")}) == {"cv/mask_ap_mean": "nan"}


# --- a registered model from a hand-built job (no training) ------------------------------------------------


def _fake_job(root: Path, uri: str) -> str:
    """A parent run laid out as the runner's: config.yaml and class_names.json, and a finished `final`
    child run holding an untrained, seeded tiny model's weights. Returns the parent run id."""
    import keras

    from bookseg.config import factory
    from bookseg.inference.trained_model import default_config
    from bookseg.mrcnn.model import MaskRCNN

    cfg = default_config(["model=tiny", "anchors=tiny"])
    keras.utils.set_random_seed(0)
    weights = root / "mask_rcnn_final.weights.h5"
    MaskRCNN(factory.mrcnn_config(cfg, num_classes=2)).save_weights(str(weights))
    OmegaConf.save(cfg, root / "config.yaml")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("bookseg/registry")
    parent = client.create_run(experiment, run_name="main")
    client.log_artifact(parent.info.run_id, str(root / "config.yaml"))
    client.log_dict(parent.info.run_id, {"class_names": ["book"]}, "class_names.json")
    child = client.create_run(
        experiment, run_name="final", tags={"mlflow.parentRunId": parent.info.run_id, "fold": "final"}
    )
    client.log_artifact(child.info.run_id, str(weights), "weights")
    client.log_metric(child.info.run_id, "test/mask_ap50", 0.75)
    client.set_terminated(child.info.run_id)
    client.set_terminated(parent.info.run_id)
    return parent.info.run_id


def _shelf(root: Path, seed: int, size: tuple[int, int]) -> Path:
    """One synthetic shelf PNG (not in any training set)."""
    project = generate_shelves(root / "shelves", 1, seed=seed, image_size=size)
    return project.parent / "images" / "shelf_0000.png"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the store's default artifact root (./mlruns) goes under `root`
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        parent_id = _fake_job(root, uri)
        version = register_job_model("books", parent_id, SUMMARY, uri)
        shelf = _shelf(root, seed=3, size=(160, 200))
        yield {"root": root, "uri": uri, "parent": parent_id, "version": version, "image": shelf}
    mlflow.set_tracking_uri(previous)


def test_registered_version_holds_the_job_metrics_and_origin(registered):
    version = registered["version"]
    assert (version.name, str(version.version)) == ("books", "1")
    assert version.run_id == registered["parent"]
    assert {k: version.tags[k] for k in summary_tags(SUMMARY)} == summary_tags(SUMMARY)
    assert version.tags["bookseg.parent_run_id"] == registered["parent"]
    assert "final model" in version.tags["bookseg.source"]
    assert json.loads(version.tags["bookseg.class_names"]) == ["book"]
    assert "cv/mask_ap50: 0.5000 ± 0.1000" in version.description
    assert "final/test/mask_ap50: 0.7500" in version.description
    run = MlflowClient(registered["uri"]).get_run(registered["parent"])
    assert run.info.status == "FINISHED"  # reopened for the logging, closed again


def test_pyfunc_signature_and_input_example(registered):
    info = mlflow.models.get_model_info("models:/books/1")
    assert info.signature.inputs.input_names() == ["image"]
    params = {p.name: p.default for p in info.signature.params}
    assert params == {"min_confidence": 0.7, "max_instances": 40}  # the tiny config's defaults
    dst = str(registered["root"] / "downloaded")
    local = Path(mlflow.artifacts.download_artifacts("models:/books/1", dst_path=dst))
    example = json.loads((local / "serving_input_example.json").read_text())
    assert example["dataframe_split"]["columns"] == ["image"] and example["params"] == {"min_confidence": 0.7}
    (blank,) = example["dataframe_split"]["data"][0]
    assert decode_image(blank, 0, registered["root"]).shape == (64, 64, 3)
    assert sorted(p.name for p in (local / "artifacts").iterdir()) == [
        "class_names.json",
        "config.yaml",
        "mask_rcnn.weights.h5",
    ]


def test_pyfunc_predict_matches_detect(registered):
    model = mlflow.pyfunc.load_model("models:/books/1")
    books = model.predict(
        image_frame([registered["image"]]), params={"min_confidence": 0.0, "max_instances": 12}
    )
    reference = load_from_run(registered["parent"], tracking_uri=registered["uri"])
    image = load_image_rgb(registered["image"])
    expected = reference.model.detect([image], min_confidence=0.0, max_instances=12)[0]
    assert list(books.columns) == list(OUTPUT_COLUMNS)
    _assert_same_books(books.to_dict(orient="records"), expected, image.shape[:2])
    assert model.predict(image_frame([registered["image"]])).empty  # default min_confidence 0.7, untrained
    with pytest.raises(MlflowException, match="image 0: cannot decode"):
        model.predict(invocation_request([registered["root"] / "config.yaml"])["dataframe_records"])


def _assert_same_books(records: list[dict], expected: dict, size: tuple[int, int], image_index: int = 0):
    """Response records of one image equal a `detect` result: count, boxes (1 px), scores, masks, polygons."""
    n = len(expected["scores"])
    assert n > 0 and len(records) == n
    assert all(r["image_index"] == image_index and r["class_name"] == "book" for r in records)
    boxes = np.array([r["bbox"] for r in records])
    y1, x1, y2, x2 = np.asarray(expected["rois"], float).T
    np.testing.assert_allclose(boxes, np.stack([x1, y1, x2 - x1, y2 - y1], axis=1), atol=1.0)
    np.testing.assert_allclose([r["score"] for r in records], expected["scores"], atol=1e-4)
    for k, record in enumerate(records):
        assert record["segmentation"]["size"] == list(size)
        mask = mask_util.decode(
            {"size": record["segmentation"]["size"], "counts": record["segmentation"]["counts"].encode()}
        ).astype(bool)
        np.testing.assert_array_equal(mask, expected["masks"][..., k])
        polygon, _ = detection_polygon(expected["masks"][..., k], expected["rois"][k])  # as `bookseg predict`
        assert record["polygon"] == (None if polygon is None else polygon.reshape(-1).tolist())


# --- the real job and the real scoring server ------------------------------------------------------------


def _wait_for_ping(url: str, server: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"scoring server exited ({server.returncode}):\n{log.read_text()[-5000:]}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    raise AssertionError(f"no /ping answer in {timeout:.0f} s:\n{log.read_text()[-5000:]}")


def _post(url: str, body: dict, timeout: float = 300.0) -> dict:
    request = urllib.request.Request(
        url + "/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_job_registers_its_final_model_and_the_scoring_server_outlines_books(cli):
    train = synthetic_dataset_path(cli.root / "cache", 8, seed=0, image_size=(128, 128))
    test = synthetic_dataset_path(cli.root / "cache", 2, seed=1, image_size=(128, 128))
    # lr_scale: a smoke model trained at the normal rate calls every proposal background (no book to
    # compare); a barely trained one scores books about 0.5, so min_confidence=0 gives some.
    proc = cli.run(
        "+experiment=smoke",
        "data=via",
        f"data.path={train}",
        f"data.test.path={test}",
        "cv.final=true",
        "tracking.register_model=books",
        "lr_scale=0.00001",
    )
    assert "Registered models:/books/1 (MLflow run" in proc.stdout
    (parent,), _ = cli.runs()
    client = cli.client()
    version = client.get_model_version("books", "1")
    assert version.run_id == parent.info.run_id and "final model" in version.tags["bookseg.source"]
    for key in ("cv/mask_ap50_mean", "test/mask_ap50_mean", "final/test/mask_ap50"):
        assert float(version.tags[key]) == pytest.approx(parent.data.metrics[key], abs=1e-4)
    assert "cv/mask_ap50:" in version.description

    shelf = _shelf(cli.root, seed=5, size=(128, 128))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = cli.root / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                "models:/books/1",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-t",
                "300",
            ],
            cwd=cli.root,
            env=cli.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_ping(url, server, log)
        answer = _post(url, invocation_request([shelf], min_confidence=0.0))
        with pytest.raises(urllib.error.HTTPError) as bad:
            _post(url, {"dataframe_records": [{"image": "not base64!"}]})
        assert bad.value.code == 400 and "image 0: not valid base64" in bad.value.read().decode()
    finally:
        stop_process_group(server, timeout=30)

    reference = load_from_run(parent.info.run_id, tracking_uri=f"sqlite:///{cli.db}")
    image = load_image_rgb(shelf)
    expected = reference.model.detect([image], min_confidence=0.0)[0]
    _assert_same_books(answer["predictions"], expected, image.shape[:2])
