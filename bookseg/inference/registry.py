"""Register a job's model in the MLflow Model Registry, and the pyfunc that serves it over HTTP.

With `tracking.register_model=<name>`, a job (`python -m bookseg.run`) ends by logging its model as an
MLflow `pyfunc` model on the parent run and registering it as a new version of `<name>`; the model is the
one `bookseg.inference.trained_model.load_from_run` picks: the final model (`cv.final=true`), else the best fold
by mask AP50. The version's tags hold the job's summary metrics (`cv/*_mean`, `test/*_mean`,
`final/test/*`, `cv/n_folds`) and its description says which model it is, with mean ± std per metric.

    python -m bookseg.run tracking.register_model=books cv.final=true
    mlflow models serve -m models:/books/1 --env-manager local -p 5001

The logged model holds `weights/mask_rcnn_<fold>.weights.h5`, `config.yaml` (the job's resolved config,
with the fitted anchors of that model when the job used `anchors.auto`) and `class_names.json`; the
pyfunc (`BookOutlinesModel`) rebuilds the network from them with `trained_model.load_from_weights`. It is
logged as "models from code" (no pickle) and imports the installed `bookseg` package: serve it with
`--env-manager local` from an environment where bookseg is installed.

Request: a DataFrame with one column, `image`: per row the base64 of one image file (PNG, JPEG, any
format OpenCV reads; EXIF orientation applied as `bookseg predict` does). Optional params:
`min_confidence` (float) and `max_instances` (int), defaulting to the model config's
`detection_min_confidence` / `detection_max_instances`. With the scoring server:

    printf '{"dataframe_records": [{"image": "%s"}], "params": {"min_confidence": 0.5}}' \\
        "$(base64 -w0 shelf.jpg)" > request.json       # macOS: base64 -i shelf.jpg
    curl -s -X POST http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
        --data-binary @request.json

Response: `{"predictions": [...]}`, one record per detected book, highest score first per image
(images with no book contribute no record):

    image_index   int     row of the request the book is in (0-based)
    class_name    str     the model's class name (class id k is class_names[k - 1])
    score         float   detection score in [0, 1]
    bbox          [x, y, width, height]  COCO box in pixels of the image as sent (after EXIF orientation),
                  origin at the top-left corner of the top-left pixel; integer-valued
    segmentation  {"size": [height, width], "counts": str}  COCO compressed RLE of the full-size mask
                  (`pycocotools.mask.decode` gives the bool [H, W] mask `MaskRCNN.detect` returned)
    polygon       [x1, y1, x2, y2, ...] outline of the mask's largest part (a pixel is inside when its
                  centre is; `bookseg.data.records` convention), or null for an empty mask

In Python, the same model without a server:

    model = mlflow.pyfunc.load_model("models:/books/1")
    books = model.predict(image_frame(["shelf.jpg"]), params={"min_confidence": 0.5})  # a DataFrame
"""

from __future__ import annotations

import base64
import json
import math
import tempfile
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException
from omegaconf import OmegaConf

INPUT_COLUMN = "image"
OUTPUT_COLUMNS = ("image_index", "class_name", "score", "bbox", "segmentation", "polygon")
LOGGED_MODEL_NAME = "book_outlines"  # name of the logged model on the parent run
ARTIFACT_WEIGHTS = "weights"
ARTIFACT_CONFIG = "config"
ARTIFACT_CLASS_NAMES = "class_names"
# The "models from code" file logged with the model: all it does is hand MLflow the pyfunc.
_MODEL_CODE = '''"""bookseg book outlines: the pyfunc is bookseg.inference.registry.BookOutlinesModel."""
import mlflow

from bookseg.inference.registry import BookOutlinesModel

mlflow.models.set_model(BookOutlinesModel())
'''


class BookOutlinesModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: base64 image files in, one row per detected book out (see the module docstring)."""

    def load_context(self, context) -> None:
        """Rebuild the Mask R-CNN from the logged weights, config.yaml and class_names.json."""
        from bookseg.inference.trained_model import load_from_weights

        artifacts = context.artifacts
        self.trained = load_from_weights(
            artifacts[ARTIFACT_WEIGHTS],
            config_path=artifacts[ARTIFACT_CONFIG],
            class_names=read_class_names(artifacts[ARTIFACT_CLASS_NAMES]),
        )

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Books in each image of `model_input["image"]` (base64 image files); columns `OUTPUT_COLUMNS`."""
        params = params or {}
        return outline_books(
            self.trained.model,
            self.trained.class_names,
            image_column(model_input),
            min_confidence=params.get("min_confidence"),
            max_instances=params.get("max_instances"),
        )


# --- request and response ------------------------------------------------------------------------------


def encode_image_file(path: str | Path) -> str:
    """Base64 (ASCII, no line breaks) of an image file's bytes: one `image` value of a request."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def image_frame(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The model input for image files: a DataFrame with column `image`, one base64 file per row."""
    return pd.DataFrame({INPUT_COLUMN: [encode_image_file(p) for p in paths]})


def invocation_request(paths: Sequence[str | Path], **params) -> dict:
    """JSON body for the scoring server's `/invocations` (`dataframe_records`, plus `params` if given)."""
    body: dict = {"dataframe_records": image_frame(paths).to_dict(orient="records")}
    if params:
        body["params"] = params
    return body


def image_column(model_input) -> list[str]:
    """The `image` values of a request: a DataFrame (or a dict / list of records) with column `image`."""
    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    elif isinstance(model_input, list):
        model_input = pd.DataFrame.from_records(model_input)
    if not isinstance(model_input, pd.DataFrame) or INPUT_COLUMN not in model_input.columns:
        raise _bad_input(
            f"expected a DataFrame with a column {INPUT_COLUMN!r} (base64 image files), got "
            f"{type(model_input).__name__}"
            + (f" with columns {list(model_input.columns)}" if isinstance(model_input, pd.DataFrame) else "")
        )
    return list(model_input[INPUT_COLUMN])


def decode_image(text, index: int, directory: Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB of request row `index` (base64 of an image file), read as `bookseg predict`
    reads files (`data.images.load_image_rgb`: EXIF orientation applied, 16 bit scaled, alpha dropped).

    Raises:
        MlflowException (INVALID_PARAMETER_VALUE, HTTP 400 from the server): not base64, or not an image.
    """
    from bookseg.data.images import load_image_rgb

    if not isinstance(text, str):
        raise _bad_input(f"image {index}: expected a base64 string, got {type(text).__name__}")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except ValueError as error:
        raise _bad_input(f"image {index}: not valid base64 ({error})") from error
    path = directory / f"image_{index}"
    path.write_bytes(data)
    try:
        return load_image_rgb(path)
    except OSError as error:
        reason = str(error).replace(f"{path}: ", "")  # the temporary file's name means nothing to the client
        raise _bad_input(f"image {index}: cannot decode the image ({len(data)} bytes): {reason}") from error
    finally:
        path.unlink(missing_ok=True)


def _bad_input(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def detection_rows(image_index: int, result: dict, class_names: Sequence[str]) -> list[dict]:
    """One response record per detection of one image (JSON-serialisable, see the module docstring).

    Args:
        image_index: row of the image in the request.
        result: the image's `MaskRCNN.detect` output: rois int32 [n, 4] (y1, x1, y2, x2) pixels with
            y2/x2 exclusive, class_ids int32 [n], scores float32 [n], masks bool [H, W, n].
        class_names: class id k is `class_names[k - 1]`.

    Returns:
        Records with `OUTPUT_COLUMNS`, in detection order: bbox [x1, y1, x2 - x1, y2 - y1] (COCO),
        segmentation as COCO compressed RLE (`evaluation.coco_eval.predictions_to_coco`), polygon from
        `predict_outputs.detection_polygon` flattened to [x1, y1, x2, y2, ...] (None for an empty mask).
    """
    from bookseg.evaluation.coco_eval import predictions_to_coco
    from bookseg.inference.predict_outputs import detection_polygon

    rows = []
    for k, entry in enumerate(predictions_to_coco([image_index], [result])):
        polygon, _ = detection_polygon(result["masks"][:, :, k], result["rois"][k])
        rows.append(
            {
                "image_index": int(image_index),
                "class_name": class_names[entry["category_id"] - 1],
                "score": entry["score"],
                "bbox": entry["bbox"],
                "segmentation": entry["segmentation"],
                "polygon": None if polygon is None else [float(v) for v in polygon.reshape(-1)],
            }
        )
    return rows


def outline_books(
    model,
    class_names: Sequence[str],
    images_b64: Sequence[str],
    *,
    min_confidence: float | None = None,
    max_instances: int | None = None,
) -> pd.DataFrame:
    """Detect books in base64 image files, `config.images_per_batch` images per `detect` call.

    Each chunk's full-size masks are turned into records and dropped before the next chunk is decoded.

    Returns:
        DataFrame with `OUTPUT_COLUMNS`, one row per book (see `detection_rows`); no row for an image
        without books.
    """
    batch = max(1, int(getattr(model.config, "images_per_batch", 1)))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bookseg-serve-") as tmp:
        for start in range(0, len(images_b64), batch):
            images = [
                decode_image(text, start + i, Path(tmp))
                for i, text in enumerate(images_b64[start : start + batch])
            ]
            results = model.detect(images, min_confidence=min_confidence, max_instances=max_instances)
            for i, result in enumerate(results):
                rows += detection_rows(start + i, result, class_names)
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a `class_names.json` ({"class_names": [...]}, as the runner logs it)."""
    data = json.loads(Path(path).read_text())
    names = data.get("class_names") if isinstance(data, dict) else data
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: holds no list of class names: {data!r}")
    return names


# --- logging and registering -----------------------------------------------------------------------------


def check_registration(tracking) -> None:
    """Fail before training when `tracking.register_model` cannot work (called at the start of a job).

    Raises:
        ValueError: the name is empty, or the fold weights are not logged (`tracking.log_weights=false`).
    """
    name = tracking.register_model
    if name is None:
        return
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"tracking.register_model must be a non-empty model name, got {name!r}")
    if not tracking.log_weights:
        raise ValueError("tracking.register_model needs the fold weights: set tracking.log_weights=true")


def register_job_model(name: str, parent_run_id: str, summary: dict[str, float], tracking_uri: str):
    """Log the job's model (final, else best fold) as a pyfunc on its parent run and register it as `name`.

    Args:
        name: registered model name; each call adds a version.
        parent_run_id: the job's parent run (active, or reopened here for the logging).
        summary: the job's summary metrics (`experiment.cv.aggregate`), written to the version's tags
            (`summary_tags`) and description (`version_description`).
        tracking_uri: MLflow store of the run; the registry is the same store.

    Returns:
        The registered `ModelVersion` (with its tags and description).
    """
    from mlflow.tracking import MlflowClient

    from bookseg.inference.trained_model import load_from_run

    trained = load_from_run(parent_run_id, tracking_uri=tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    active = mlflow.active_run()
    on_parent = (
        nullcontext()
        if active and active.info.run_id == parent_run_id
        else mlflow.start_run(run_id=parent_run_id)
    )
    with tempfile.TemporaryDirectory(prefix="bookseg-register-") as tmp, on_parent:
        info = log_book_model(trained, Path(tmp), registered_model_name=name)
    client = MlflowClient(tracking_uri=tracking_uri)
    version = str(info.registered_model_version)
    for key, value in {**summary_tags(summary), **model_tags(trained, parent_run_id)}.items():
        client.set_model_version_tag(name, version, key, value)
    description = version_description(trained, parent_run_id, summary)
    client.update_model_version(name, version, description=description)
    return client.get_model_version(name, version)


def log_book_model(trained, directory: Path, *, registered_model_name: str | None = None):
    """Log `trained` (a `TrainedModel`) as the `BookOutlinesModel` pyfunc on the active run.

    `directory` receives the artifacts and the model code file first. The input example (a blank 64 x 64
    PNG) makes MLflow load and call the logged model once, in this process.

    Returns:
        MLflow's `ModelInfo` (`registered_model_version` set when `registered_model_name` is given).
    """
    code = directory / "book_outlines_model.py"
    code.write_text(_MODEL_CODE)
    config = trained.model.config
    return mlflow.pyfunc.log_model(
        name=LOGGED_MODEL_NAME,
        python_model=str(code),
        artifacts=write_artifacts(trained, directory),
        signature=model_signature(config.detection_min_confidence, config.detection_max_instances),
        input_example=(_blank_image_frame(), {"min_confidence": float(config.detection_min_confidence)}),
        pip_requirements=pinned_requirements(),
        metadata={"bookseg_source": trained.source, "class_names": list(trained.class_names)},
        registered_model_name=registered_model_name,
    )


def write_artifacts(trained, directory: Path) -> dict[str, str]:
    """The pyfunc's artifacts in `directory`: the weights (saved from `trained.model`, Keras 3
    `.weights.h5`), the config it was built from (fitted anchors included) and the class names."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "mask_rcnn.weights.h5"
    trained.model.save_weights(str(weights))
    config = directory / "config.yaml"
    OmegaConf.save(trained.cfg, config)
    class_names = directory / "class_names.json"
    class_names.write_text(json.dumps({"class_names": list(trained.class_names)}))
    return {
        ARTIFACT_WEIGHTS: str(weights),
        ARTIFACT_CONFIG: str(config),
        ARTIFACT_CLASS_NAMES: str(class_names),
    }


def model_signature(min_confidence: float, max_instances: int):
    """Input: column `image` (string, base64 image file); params `min_confidence`, `max_instances`
    with the model config's defaults. The output (a table of books) is documented, not enforced."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, INPUT_COLUMN)]),
        params=ParamSchema(
            [
                ParamSpec("min_confidence", DataType.double, float(min_confidence)),
                ParamSpec("max_instances", DataType.long, int(max_instances)),
            ]
        ),
    )


def _blank_image_frame() -> pd.DataFrame:
    import cv2

    ok, png = cv2.imencode(".png", np.full((64, 64, 3), 128, np.uint8))
    assert ok
    return pd.DataFrame({INPUT_COLUMN: [base64.b64encode(png.tobytes()).decode("ascii")]})


def pinned_requirements() -> list[str]:
    """bookseg's own runtime dependencies pinned to the installed versions (given explicitly, so MLflow
    does not load the model in a subprocess to infer them). bookseg itself must be installed too."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    pinned = []
    for text in requires("bookseg") or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an optional extra (dev)
        try:
            pinned.append(f"{requirement.name}=={version(requirement.name)}")
        except PackageNotFoundError:
            pinned.append(str(requirement))
    return pinned


def summary_tags(summary: dict[str, float]) -> dict[str, str]:
    """Model version tags from a job summary: cv/ and test/ means, final/test/*, cv/n_folds (4 decimals)."""
    keep = {
        key: value
        for key, value in summary.items()
        if key.endswith("_mean") or key.startswith("final/") or key == "cv/n_folds"
    }
    return {key: _number(value) for key, value in sorted(keep.items())}


def model_tags(trained, parent_run_id: str) -> dict[str, str]:
    """Where the registered model comes from: parent run, chosen model, class names."""
    return {
        "bookseg.parent_run_id": parent_run_id,
        "bookseg.source": trained.source[:4900],
        "bookseg.class_names": json.dumps(list(trained.class_names)),
    }


def version_description(trained, parent_run_id: str, summary: dict[str, float]) -> str:
    """Human-readable description of a model version: origin, classes, metrics (mean ± std), request."""
    lines = [
        f"bookseg Mask R-CNN from {trained.source}.",
        f"Classes: {', '.join(trained.class_names)}.",
        f"Job metrics (parent run {parent_run_id}):",
    ]
    for key in sorted(summary):
        if key.endswith("_std"):
            continue
        if key.endswith("_mean"):
            std = summary.get(key[: -len("_mean")] + "_std")
            lines.append(f"  {key[: -len('_mean')]}: {_number(summary[key])} ± {_number(std)}")
        else:
            lines.append(f"  {key}: {_number(summary[key])}")
    lines.append(
        f"Input: DataFrame column '{INPUT_COLUMN}' = base64 image file; output: one row per book "
        f"({', '.join(OUTPUT_COLUMNS)}); see bookseg.inference.registry."
    )
    return "\n".join(lines)


def _number(value) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    return f"{value:.4f}" if math.isfinite(value) else str(value)
