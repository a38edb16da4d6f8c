"""Rebuild a trained Mask R-CNN for inference: from an MLflow run, or from a weights file plus a config.

An experiment job (`python -m bookseg.run`) is an MLflow parent run holding `config.yaml` (the resolved
Hydra config); each fold is a child run (tag `mlflow.parentRunId`, tag `fold`) holding
`weights/mask_rcnn_fold<i>.weights.h5` (Keras 3 weights of the whole `MaskRCNN`) and the fold's metrics.
With `cv.final=true` the job also has the child run `final` (tag `fold` = "final"), a model trained on
every training image, with `weights/mask_rcnn_final.weights.h5`.

    trained = load_from_run("3f2a...")                  # parent run: the final model, else the best fold
    trained = load_from_run("3f2a...", fold=1)          # parent run: fold 1
    trained = load_from_run("9c1b...")                  # a fold's child run: config from its parent
    trained = load_from_weights("fold0.weights.h5", config_path="config.yaml")
    path = run_weights("3f2a...", None, cache / "runs")  # the same weights as a file (`model.weights=run:<id>`)

Class names (class id k is `class_names[k - 1]`): given explicitly, else the run's `class_names.json`
artifact when the runner logged one, else derived from the config's data section (`[default_class]` when
every region is one class, else the classes of the annotation file the config names).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bookseg.tracking import FINAL

BEST_FOLD_METRIC = "mask_ap50"
CLASS_NAMES_ARTIFACT = "class_names.json"
CONFIG_ARTIFACT = "config.yaml"
WEIGHTS_ARTIFACT_DIR = "weights"


class ModelSourceError(ValueError):
    """A run, fold, weights file or config cannot give a usable model (the message says which and why)."""


@dataclass
class TrainedModel:
    """A model ready for `detect`, with where it came from.

    Attributes:
        model: `bookseg.mrcnn.model.MaskRCNN` with the trained weights loaded.
        class_names: class names without background; class id k is `class_names[k - 1]`.
        cfg: the (resolved) bookseg config the model was built from.
        source: human-readable origin, e.g. "MLflow run 3f2a... fold 1 (mask_ap50=0.812)".
    """

    model: object
    class_names: list[str]
    cfg: DictConfig
    source: str


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """Tracking URI as the runner resolves it: argument, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    from bookseg.tracking.mlflow_runs import DEFAULT_TRACKING_URI

    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def default_config(overrides: list[str] | None = None) -> DictConfig:
    """The composed default bookseg config (`conf/config.yaml`: the `cpu` model), with Hydra `overrides`."""
    from bookseg.config.compose import compose_config

    return compose_config(overrides or [])


def load_config(path: str | os.PathLike) -> DictConfig:
    """A resolved bookseg config as the runner logs it (`config.yaml`); checks the keys a model needs."""
    path = Path(path)
    if not path.is_file():
        raise ModelSourceError(f"config file not found: {path}")
    cfg = OmegaConf.load(path)
    missing = [key for key in ("model", "anchors", "optimizer", "data") if key not in cfg]
    if missing:
        raise ModelSourceError(
            f"{path}: not a bookseg config (no {', '.join(missing)} section); pass the config.yaml a run logged"
        )
    return _upgrade_model_section(cfg, path)


def _upgrade_model_section(cfg: DictConfig, path: Path) -> DictConfig:
    """Configs logged before `model.norm` and `model.mask_pool_size` existed: the same model in today's keys."""
    model = cfg.model
    if "norm" not in model:
        train_bn = model.get("train_bn", False)
        if train_bn is True:
            raise ModelSourceError(
                f"{path}: model.train_bn=true (BatchNorm on batch statistics even at inference) is no longer "
                "a mode; these weights need a bookseg version before model.norm"
            )
        model.norm = "frozen_bn" if train_bn is False else "batch_norm"
        model.pop("train_bn", None)
    if "mask_pool_size" not in model:
        model.mask_pool_size = 14
    return cfg


def class_names_from_config(cfg: DictConfig) -> list[str]:
    """Class names the config's data section implies.

    Every region is `data.default_class` when no class attribute is configured (VIA, LabelMe, the
    synthetic shelves); otherwise (a class attribute, or COCO categories) the annotation file named by
    `data.path` is read (without opening images) for its class list, as the runner did.

    Raises:
        ModelSourceError: the classes depend on an annotation file that cannot be read here.
    """
    data = cfg.data
    kind = data.get("kind", "synthetic")
    class_attribute = data.get("class_attribute")
    if kind != "coco" and not class_attribute:
        return [data.get("default_class", "book")]
    from bookseg.data.readers import DatasetError, read_dataset

    path = data.get("path")
    try:
        dataset = read_dataset(
            Path(str(path)).expanduser(),
            images_dir=Path(data.images_dir).expanduser() if data.get("images_dir") else None,
            class_attribute=class_attribute,
            default_class=data.get("default_class", "book"),
            check_images=False,
        )
    except (DatasetError, OSError, TypeError) as error:
        raise ModelSourceError(
            f"the classes of this model come from {path!r} (data.kind={kind}, "
            f"class_attribute={class_attribute}), which cannot be read here ({error}); pass the class names "
            "explicitly (--class-names)"
        ) from error
    return list(dataset.class_names)


def build_model(
    cfg: DictConfig,
    class_names: list[str],
    weights: str | os.PathLike,
    source: str,
    precision: str | None = None,
) -> TrainedModel:
    """A `MaskRCNN` for `cfg` with `len(class_names) + 1` classes and the weights of `weights`.

    `precision` ("float32" / "mixed_bfloat16") overrides `cfg.model.precision`: weights are float32
    either way, so a model trained in one precision runs in the other.

    `*.weights.h5` files are Keras 3 weights of the whole model (what the runner logs and checkpoints);
    other `.h5` files are read as matterport / legacy Keras layouts and must cover every layer.

    Raises:
        ModelSourceError: missing file, or weights that do not fit the model (wrong class count, layers
            missing).
    """
    from bookseg.config import factory
    from bookseg.mrcnn.model import MaskRCNN
    from bookseg.mrcnn.weights import WeightLoadError, load_checkpoint, load_weights

    weights = Path(weights)
    if not weights.is_file():
        raise ModelSourceError(f"weights file not found: {weights}")
    if not class_names:
        raise ModelSourceError("at least one class name is needed")
    if cfg.anchors.get("auto"):
        raise ModelSourceError(
            "this config fits its anchors per fold (anchors.auto): load the model with --run, or set "
            "anchors.scales / anchors.ratios to the fold's values (its anchors.json, or the fold run's "
            "anchors/fitted_* params) and anchors.auto=false"
        )
    config = factory.mrcnn_config(cfg, num_classes=len(class_names) + 1)
    model = MaskRCNN(config.replace(precision=precision) if precision else config)
    try:
        if weights.name.endswith(".weights.h5"):
            load_checkpoint(model, weights)
        else:
            report = load_weights(model, weights)
            unusable = report.missing + [
                f"{k} ({v})" for k, v in report.reasons.items() if "class count" in v
            ]
            if unusable:
                raise ModelSourceError(
                    f"{weights}: does not hold trained weights for every layer of this model "
                    f"({len(class_names) + 1} classes incl. background): {', '.join(unusable[:8])}"
                )
    except WeightLoadError as error:
        raise ModelSourceError(
            f"{weights}: does not fit a {cfg.model.get('name', '?')} model with {len(class_names)} class(es) "
            f"{class_names}: {error}"
        ) from error
    return TrainedModel(model=model, class_names=list(class_names), cfg=cfg, source=source)


def load_from_weights(
    weights: str | os.PathLike,
    *,
    config_path: str | os.PathLike | None = None,
    class_names: list[str] | None = None,
    precision: str | None = None,
) -> TrainedModel:
    """Model from a weights file and a runner `config.yaml` (default: the composed default config)."""
    cfg = load_config(config_path) if config_path else default_config()
    names = list(class_names) if class_names else class_names_from_config(cfg)
    return build_model(cfg, names, weights, source=f"weights {weights}", precision=precision)


def load_from_run(
    run_id: str,
    *,
    fold: int | str | None = None,
    tracking_uri: str | None = None,
    class_names: list[str] | None = None,
    precision: str | None = None,
) -> TrainedModel:
    """Model of an experiment job, from MLflow: its final model (`cv.final`) or one of its folds.

    Args:
        run_id: a parent run (job) id, or a fold's (or the final model's) child run id.
        fold: with a parent run, the fold whose weights to use, or "final" (default: the finished final
            model when the job has one, else the best fold by `mask_ap50`); with a child run it must be
            that run's fold, if given.
        tracking_uri: MLflow store (default as `resolve_tracking_uri`).
        class_names: override the class names.
        precision: override the run's `model.precision` (see `build_model`).

    Raises:
        ModelSourceError: unknown run, no such fold, no weights or config artifact.
    """
    client, uri, run = _open_run(run_id, tracking_uri)
    parent_id = run.data.tags.get("mlflow.parentRunId")
    if parent_id:
        child = run
        child_fold = _fold_of(child)
        if fold is not None and child_fold != fold:
            raise ModelSourceError(f"run {run_id} is fold {child_fold}, not fold {fold}; pass its parent run")
    else:
        parent_id = run_id
        child = _choose_fold(client, run, fold)
    with tempfile.TemporaryDirectory(prefix="bookseg-run-") as tmp:
        config_file = _download(uri, parent_id, CONFIG_ARTIFACT, Path(tmp))
        cfg = load_config(config_file)
        names = list(class_names) if class_names else _logged_class_names(uri, parent_id, Path(tmp))
        if not names:
            names = class_names_from_config(cfg)
        cfg = _with_fitted_anchors(cfg, child)
        weights = _download(uri, child.info.run_id, _weights_artifact(client, child), Path(tmp))
        source = f"MLflow run {parent_id} {_describe(child)}"
        return build_model(cfg, names, weights, source, precision=precision)


def run_weights(run_id: str, tracking_uri: str | None, dst: str | os.PathLike) -> Path:
    """Local copy of the weights of run `run_id`, as `load_from_run` would choose them, kept under `dst`.

    A job's parent run gives its finished final model (`cv.final`), else its best fold by mask_ap50; a fold's
    (or the final model's) child run gives its own weights. The file is downloaded once to
    `dst/<child run id>/weights/<file>` (into a temporary folder, then renamed) and reused afterwards:
    a run's logged weights do not change.

    Raises:
        ModelSourceError: unknown run, a run that is not a bookseg job or fold, no weights artifact.
    """
    client, uri, run = _open_run(run_id, tracking_uri)
    child = _model_run(client, run)
    artifact = _weights_artifact(client, child)
    target = Path(dst) / child.info.run_id / artifact
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dst) as tmp:
        os.replace(_download(uri, child.info.run_id, artifact, Path(tmp)), target)
    return target


@dataclass(frozen=True)
class RunAnchors:
    """The anchors a run's model trained with (a model fine-tuned from its weights needs as many ratios).

    Attributes:
        model: which model of the run, e.g. "fold 1 (child run 9c1b..., mask_ap50=0.81)".
        scales, ratios: `anchors.scales` / `anchors.ratios`, the fold's fitted ones with `anchors.auto`.
    """

    model: str
    scales: list[float]
    ratios: list[float]


def run_anchors(run_id: str, tracking_uri: str | None = None) -> RunAnchors:
    """Anchors of the model `run_weights(run_id, ...)` gives: its job's `config.yaml`, with the fold's fitted
    anchors when the job used `anchors.auto`.

    Raises:
        ModelSourceError: unknown run, no config artifact, anchors.auto without logged fitted anchors.
    """
    client, uri, run = _open_run(run_id, tracking_uri)
    child = _model_run(client, run)
    parent_id = run.data.tags.get("mlflow.parentRunId") or run_id
    with tempfile.TemporaryDirectory(prefix="bookseg-run-") as tmp:
        cfg = _with_fitted_anchors(load_config(_download(uri, parent_id, CONFIG_ARTIFACT, Path(tmp))), child)
    return RunAnchors(
        _describe(child), [float(s) for s in cfg.anchors.scales], [float(r) for r in cfg.anchors.ratios]
    )


def _open_run(run_id: str, tracking_uri: str | None):
    """(client, resolved tracking URI, run) of `run_id`."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise ModelSourceError(f"no MLflow run {run_id!r} in {uri}: {error.message}") from error
    return client, uri, run


def _model_run(client, run):
    """The child run whose weights stand for `run`: itself for a fold's run, else `_choose_fold`'s default."""
    if run.data.tags.get("mlflow.parentRunId"):
        _fold_of(run)  # a bookseg fold (or final) run
        return run
    return _choose_fold(client, run, None)


def _with_fitted_anchors(cfg: DictConfig, child) -> DictConfig:
    """`cfg` with the anchors the fold trained with: with `anchors.auto` they were fitted per fold and
    logged on the fold's run (`anchors/fitted_scales`, `anchors/fitted_ratios`)."""
    if not cfg.anchors.get("auto"):
        return cfg
    params = child.data.params
    if "anchors/fitted_scales" not in params:
        raise ModelSourceError(f"fold run {child.info.run_id} used anchors.auto but logged no fitted anchors")
    cfg = cfg.copy()
    cfg.anchors.scales = json.loads(params["anchors/fitted_scales"])
    cfg.anchors.ratios = json.loads(params["anchors/fitted_ratios"])
    cfg.anchors.auto = False
    return cfg


def _describe(child) -> str:
    def rounded(name):
        value = child.data.metrics.get(name)
        return value if value is None else round(value, 4)

    if _fold_of(child) == FINAL:
        return (
            f"final model, trained on all {child.data.params.get('n_train', '?')} training images "
            f"(child run {child.info.run_id}, test/{BEST_FOLD_METRIC}={rounded('test/' + BEST_FOLD_METRIC)})"
        )
    return (
        f"fold {_fold_of(child)} (child run {child.info.run_id}, "
        f"{BEST_FOLD_METRIC}={rounded(BEST_FOLD_METRIC)})"
    )


def _fold_of(child) -> int | str:
    """The child run's fold number, or FINAL for the final model."""
    tag = child.data.tags.get("fold")
    if tag == FINAL:
        return FINAL
    try:
        return int(tag)
    except (TypeError, ValueError) as error:
        raise ModelSourceError(
            f"run {child.info.run_id} has no integer (or 'final') 'fold' tag: not a bookseg fold run"
        ) from error


def _choose_fold(client, parent, fold: int | str | None):
    """The child run of `fold` (a number or FINAL); by default the finished final model, else the finished
    fold with the highest mask_ap50 (NaN last, lowest fold on ties)."""
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        max_results=1000,
    )
    folds = {}
    for child in children:
        folds.setdefault(_fold_of(child), child)
    if not folds:
        raise ModelSourceError(f"run {parent.info.run_id} has no fold runs: is it a bookseg experiment job?")
    if fold is not None:
        if fold not in folds:
            raise ModelSourceError(
                f"run {parent.info.run_id} has no fold {fold} (folds: {sorted(folds, key=str)})"
            )
        return folds[fold]
    if FINAL in folds and folds[FINAL].info.status == "FINISHED":
        return folds[FINAL]
    folds.pop(FINAL, None)
    if not folds:
        raise ModelSourceError(
            f"run {parent.info.run_id} has no fold runs and its final model did not finish"
        )
    finished = {k: c for k, c in folds.items() if c.info.status == "FINISHED"} or folds

    def rank(item):
        index, child = item
        value = child.data.metrics.get(BEST_FOLD_METRIC, math.nan)
        return (0 if math.isfinite(value) else 1, -value if math.isfinite(value) else 0.0, index)

    return min(finished.items(), key=rank)[1]


def _weights_artifact(client, child) -> str:
    names = [
        a.path
        for a in client.list_artifacts(child.info.run_id, WEIGHTS_ARTIFACT_DIR)
        if a.path.endswith(".weights.h5")
    ]
    if not names:
        raise ModelSourceError(
            f"fold run {child.info.run_id} has no {WEIGHTS_ARTIFACT_DIR}/*.weights.h5 artifact "
            "(was it trained with tracking.log_weights=false, or did it fail?)"
        )
    return max(names)


def _download(uri: str, run_id: str, artifact: str, dst: Path) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    target = dst / run_id
    target.mkdir(parents=True, exist_ok=True)
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact, dst_path=str(target), tracking_uri=uri
            )
        )
    except (MlflowException, OSError) as error:
        raise ModelSourceError(f"run {run_id}: cannot download artifact {artifact!r}: {error}") from error


def _logged_class_names(uri: str, run_id: str, dst: Path) -> list[str] | None:
    """`class_names.json` of the run ({"class_names": [...]} or a plain list), None when not logged."""
    from mlflow.tracking import MlflowClient

    if CLASS_NAMES_ARTIFACT not in {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(run_id)}:
        return None
    data = json.loads(_download(uri, run_id, CLASS_NAMES_ARTIFACT, dst).read_text())
    names = data.get("class_names") if isinstance(data, dict) else data
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise ModelSourceError(f"run {run_id}: {CLASS_NAMES_ARTIFACT} holds no list of class names: {data!r}")
    return names
