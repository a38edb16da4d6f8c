"""The weights a training job starts from: `model.weights` = a path | `coco` | `imagenet` | `run:<run id>`.

* a path, `coco`, `imagenet`: the model layer's files (`bookseg.mrcnn.pretrained.weights_file`: pinned
  downloads, digests, the cache folder).
* `run:<run id>`: the weights a bookseg MLflow run logged (a job: its final model, else its best fold; a
  fold's run: that fold), from the job's tracking store (`trained_model.run_weights`).

`resolve_weights` / `resolve_config_weights` are what the runner's check before training
(`bookseg.experiment.fold.check_initial_weights`) and the fold's training call, so a download that fails
stops the job before anything trains, with the URL, the expected digest and the path to put the file at
by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bookseg.inference.trained_model import ModelSourceError, resolve_tracking_uri, run_anchors, run_weights
from bookseg.mrcnn.pretrained import RUN_PREFIX, WeightsSourceError, weights_cache_dir, weights_file


@dataclass(frozen=True)
class ResolvedWeights:
    """A `model.weights` value turned into a local file.

    Attributes:
        spec: the value as configured (`coco`, `imagenet`, `run:<id>`, or a path).
        path: the local file to load.
        source: human-readable origin, printed when the weights are loaded.
        run_id, tracking_uri: set for `run:<id>` (where `mismatch_hint` looks up the run's anchors).
    """

    spec: str
    path: Path
    source: str
    run_id: str | None = None
    tracking_uri: str | None = None

    def mismatch_hint(self, ratios_here: int) -> str | None:
        """For `run:<id>` weights that do not fit a model with `ratios_here` anchor ratios: the run's anchors
        and what to set, when the anchor counts differ; None otherwise."""
        if self.run_id is None:
            return None
        return run_anchor_mismatch(self.run_id, self.tracking_uri, ratios_here)


def resolve_weights(
    spec: str, *, backbone: str, tracking_uri: str | None = None, cache_dir: Path | None = None
) -> ResolvedWeights:
    """The local file behind a `model.weights` value, downloading a named one on first use.

    Args:
        spec: `coco`, `imagenet`, `run:<run id>`, or a path to an h5 file.
        backbone: `model.backbone` (chooses the ImageNet file).
        tracking_uri: MLflow store of `run:<id>` (None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).
        cache_dir: download folder (default `weights_cache_dir()`).

    Raises:
        WeightsSourceError: starting with `model.weights=<spec>:`: no such file, a backbone without ImageNet
            weights, a failed or corrupt download, an unknown run or a run without weights.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else weights_cache_dir()
    try:
        if spec.startswith(RUN_PREFIX):
            return _resolve_run(spec, tracking_uri, cache_dir)
        return ResolvedWeights(spec, *weights_file(spec, backbone=backbone, cache_dir=cache_dir))
    except WeightsSourceError as error:
        raise WeightsSourceError(f"model.weights={spec!r}: {error}") from error


def resolve_config_weights(cfg, cache_dir: Path | None = None) -> ResolvedWeights | None:
    """`resolve_weights` for a composed bookseg config (`model.weights`, `model.backbone`, its tracking
    store); None when `model.weights` is not set."""
    spec = cfg.model.weights
    if not spec:
        return None
    tracking = cfg.get("tracking")
    uri = tracking.get("tracking_uri") if tracking is not None else None
    return resolve_weights(str(spec), backbone=cfg.model.backbone, tracking_uri=uri, cache_dir=cache_dir)


def _resolve_run(spec: str, tracking_uri: str | None, cache_dir: Path) -> ResolvedWeights:
    run_id = spec[len(RUN_PREFIX) :].strip()
    if not run_id:
        raise WeightsSourceError(
            "give the MLflow run id after 'run:' (a job's parent run, or one fold's run)"
        )
    uri = resolve_tracking_uri(tracking_uri)
    try:
        path = run_weights(run_id, uri, cache_dir / "runs")
    except ModelSourceError as error:
        raise WeightsSourceError(str(error)) from error
    return ResolvedWeights(spec, path, f"{spec} ({path}, from MLflow store {uri})", run_id, uri)


def run_anchor_mismatch(run_id: str, tracking_uri: str | None, ratios_here: int) -> str | None:
    """When run `run_id`'s model used another number of anchor ratios than `ratios_here`: what to set.

    A Keras 3 weights file fits only the architecture it was saved from, and the number of anchor ratios
    sizes the RPN head. A run trained with `anchors.auto` used per-fold fitted anchors (logged on the fold's
    run), so its model expects those. None when the counts agree, or the run's anchors cannot be looked up.
    """
    try:
        anchors = run_anchors(run_id, tracking_uri)
    except ModelSourceError:
        return None
    if len(anchors.ratios) == ratios_here:
        return None
    scales = "[" + ",".join(f"{s:g}" for s in anchors.scales) + "]"
    ratios = "[" + ",".join(f"{r:g}" for r in anchors.ratios) + "]"
    return (
        f"run {run_id} is {anchors.model}, trained with anchors.scales={scales} anchors.ratios={ratios} "
        f"({len(anchors.ratios)} anchor ratios), this config has {ratios_here}: its weights do not fit. "
        f"Fine-tune with the run's anchors: anchors.auto=false 'anchors.scales={scales}' 'anchors.ratios={ratios}' "
        f"(or keep anchors.auto=true with anchors.auto_ratios={len(anchors.ratios)})"
    )
