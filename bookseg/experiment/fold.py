"""Train and evaluate one cross-validation fold inside its MLflow child run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig, OmegaConf

from bookseg.config import factory
from bookseg.config.validate import FOLD_METRICS, raise_problems
from bookseg.data.images import load_image_rgb
from bookseg.data.records import ImageRecord
from bookseg.experiment.anchors_fit import fold_anchor_config, ratio_count
from bookseg.tracking import FINAL
from bookseg.tracking.callbacks import EpochCheckpoint, JobProgress, MlflowEpochLogger, log_missing_epoch
from bookseg.tracking.plots import plot_loss_curves

_DETECT_CHUNK = 8  # images per detect() call while evaluating


def member_name(index: int | str) -> str:
    """Name of a job's model, as its child run and weights artifact are named: `fold<i>` or `final`."""
    return FINAL if index == FINAL else f"fold{index}"


def _label(index: int | str) -> str:
    return "final model" if index == FINAL else f"fold {index}"


def total_epochs(cfg: DictConfig) -> int:
    return sum(int(s.epochs) for s in cfg.stages.schedule)


def stage_of_epoch(cfg: DictConfig):
    """Function epoch index (0-based, global) -> 'i/n layers' label of the stage it belongs to."""
    bounds = np.cumsum([int(s.epochs) for s in cfg.stages.schedule])
    n = len(bounds)

    def label(epoch: int) -> str:
        i = min(int(np.searchsorted(bounds, epoch, side="right")), n - 1)
        return f"{i + 1}/{n} {cfg.stages.schedule[i].layers}"

    return label


def run_fold(
    cfg: DictConfig,
    index: int | str,
    train: list[ImageRecord],
    val: list[ImageRecord],
    class_names: list[str],
    fold_dir: Path,
    progress: JobProgress,
    test: list[ImageRecord] | None = None,
) -> dict[str, float]:
    """Train fold `index` (resuming from its last checkpoint), evaluate it, log everything to MLflow.

    `index` is FINAL for the final model (`cv.final`): `train` is every training image and `val` is
    empty, so it is scored on the test set only. With `test` records (the held-out test set), the
    model scores them too: `test/<metric>`.

    Returns the metrics (FOLD_METRICS unless `val` is empty, plus `test/*`), also logged on the active
    (child) run.
    """
    from bookseg.data.augment import build_augmentation
    from bookseg.data.copy_paste import build_copy_paste
    from bookseg.mrcnn.distribute import distributable, make_strategy
    from bookseg.mrcnn.inputs import make_dataset
    from bookseg.mrcnn.model import MaskRCNN
    from bookseg.mrcnn.training import train_stages
    from bookseg.mrcnn.weights import find_last_checkpoint, load_checkpoint

    keras.backend.clear_session()
    seed = cfg.seed + (cfg.cv.k if index == FINAL else index)
    keras.utils.set_random_seed(seed)
    config = factory.mrcnn_config(cfg, num_classes=len(class_names) + 1)
    if cfg.anchors.auto:  # fitted to this fold's training boxes only, never to `val`
        config = fold_anchor_config(config, train, ratio_count(cfg.anchors), fold_dir, _label(index))
    strategy = make_strategy(cfg.strategy)
    with strategy.scope():
        model = MaskRCNN(config)
        ckpt_dir = fold_dir / "checkpoints"
        last = find_last_checkpoint(ckpt_dir)
        initial_epoch = 0
        if last is not None:
            path, initial_epoch = last
            load_checkpoint(model, path)
            progress.skip(initial_epoch)
            print(f"fold {index}: resuming from {path} (epoch {initial_epoch})", flush=True)
            if log_missing_epoch(path, initial_epoch):
                print(
                    f"fold {index}: logged epoch {initial_epoch}'s metrics (stopped before MLflow had them)",
                    flush=True,
                )
        elif cfg.model.weights:
            report = _load_initial_weights(cfg, model, index)
            print(report.summary(), flush=True)
            mlflow.log_text(report.summary(), "weights_load_report.txt")
    # Each step takes images_per_batch images per replica: Keras splits the global batch between them.
    global_batch = config.replace(images_per_batch=config.images_per_batch * strategy.num_replicas_in_sync)
    if strategy.num_replicas_in_sync > 1:
        print(
            f"{_label(index)}: {strategy.num_replicas_in_sync} replicas, {global_batch.images_per_batch} images per step",
            flush=True,
        )

    # Copy-paste sources: this fold's training records only, the list the training dataset is built from.
    copy_paste = build_copy_paste(cfg.augmentation.copy_paste, train, class_names)
    augment = build_augmentation(
        OmegaConf.to_container(cfg.augmentation.transforms, resolve=True), seed=seed, copy_paste=copy_paste
    )
    train_data = distributable(
        make_dataset(train, global_batch, class_names, augment=augment, shuffle=True, seed=seed, repeat=True)
    )
    # The same validation images every epoch (a finite pass), so val/* curves compare like with like:
    # the first validation_steps batches of the fold (all of it when there are fewer).
    batch = global_batch.images_per_batch
    n_val = min(len(val) // batch, cfg.stages.validation_steps) * batch
    val_data = (
        distributable(
            make_dataset(val[:n_val], global_batch, class_names, shuffle=False, seed=0, repeat=False)
        )
        if n_val
        else None
    )

    callbacks = [
        # Checkpoint before logging: a kill between the two never duplicates an epoch's points, and the
        # resumed job logs the lost ones from the checkpoint's metrics file.
        EpochCheckpoint(ckpt_dir),
        MlflowEpochLogger(),
        progress.callback(
            _label(index) + ("" if index == FINAL else f" ({index + 1} of {cfg.cv.k})"),
            total_epochs(cfg),
            stage_of_epoch(cfg),
        ),
    ]
    if cfg.tracking.tensorboard:
        callbacks.append(
            keras.callbacks.TensorBoard(
                log_dir=str(fold_dir / "tensorboard"), write_graph=False, profile_batch=0
            )
        )
    if initial_epoch < total_epochs(cfg):
        train_stages(
            model,
            train_data,
            val_data,
            factory.stages(cfg),
            factory.optimizer_spec(cfg),
            steps_per_epoch=cfg.stages.steps_per_epoch,
            validation_steps=None,
            callbacks=callbacks,
            initial_epoch=initial_epoch,
            verbose=0,
            lr_schedule=factory.lr_schedule(cfg),
        )

    metrics, overlays = evaluate_fold(cfg, model, val, class_names) if val else ({}, [])
    test_overlays = []
    if test:
        test_metrics, test_overlays = evaluate_fold(cfg, model, test, class_names, whole=True)
        metrics.update({f"test/{name}": value for name, value in test_metrics.items()})
    _log_artifacts(cfg, model, fold_dir, overlays, index, test_overlays)
    mlflow.log_metrics(metrics)  # last: a fold with final metrics is complete
    return metrics


def check_initial_weights(cfg: DictConfig) -> None:
    """Resolve `model.weights` to a local file (`coco` / `imagenet` downloaded and verified on first use,
    `run:<id>` fetched from MLflow), so a missing or corrupt file stops the job before anything trains; for
    `run:<id>`, also check that the run's model has as many anchor ratios as this config. The runner calls
    this right after `validate`.

    Raises:
        ConfigError: worded as `validate`'s ("invalid config:" and the problem, naming `model.weights`).
    """
    from bookseg.inference.starting_weights import resolve_config_weights
    from bookseg.mrcnn.pretrained import WeightsSourceError

    problems = []
    try:
        resolved = resolve_config_weights(cfg)
    except WeightsSourceError as exc:
        problems.append(str(exc))
    else:
        if resolved is not None and resolved.run_id is not None:
            a = cfg.anchors
            ratios = int(a.auto_ratios if a.auto and a.auto_ratios else len(a.ratios))
            if mismatch := resolved.mismatch_hint(ratios):
                problems.append(f"model.weights={cfg.model.weights!r}: {mismatch}")
    raise_problems(problems)


def _load_initial_weights(cfg: DictConfig, model, index: int | str):
    """Load `model.weights` (a path, `coco`, `imagenet` or `run:<id>`, resolved as
    `check_initial_weights` did) into `model`; returns the `LoadReport`. For `run:<id>` weights that do not
    fit, the error says which anchors the run trained with."""
    from bookseg.inference.starting_weights import resolve_config_weights
    from bookseg.mrcnn.weights import WeightLoadError, load_weights

    start = resolve_config_weights(cfg)
    print(f"{_label(index)}: initial weights {start.source}", flush=True)
    try:
        return load_weights(model, start.path, exclude=list(cfg.model.weights_exclude))
    except WeightLoadError as error:
        hint = start.mismatch_hint(len(model.config.rpn_anchor_ratios))
        if hint:
            raise WeightLoadError(f"{error}\n{hint}") from error
        raise


def evaluate_fold(
    cfg: DictConfig, model, val: list[ImageRecord], class_names: list[str], whole: bool = False
):
    """Detect on the validation images and score them; returns (metrics, [(record, image, prediction)]).

    Images are scored chunk by chunk (`FoldEvaluator`), so only the overlays' full-size masks stay
    in memory, however large the photos and the fold. `eval.max_images` caps the images scored unless
    `whole` (the held-out test set is always scored whole).
    """
    from bookseg.evaluation.coco_eval import FoldEvaluator

    records = val[: cfg.eval.max_images] if cfg.eval.max_images and not whole else val
    evaluator, kept = FoldEvaluator(class_names), []
    for start in range(0, len(records), _DETECT_CHUNK):
        chunk = records[start : start + _DETECT_CHUNK]
        images = [load_image_rgb(r.path) for r in chunk]
        for record, image, result in zip(
            chunk, images, model.detect(images, min_confidence=cfg.eval.min_confidence)
        ):
            evaluator.add(record, result)
            if len(kept) < cfg.tracking.overlays:
                kept.append((record, image, result))
    scores = evaluator.metrics()
    metrics = {name: float(scores[name]) for name in FOLD_METRICS}
    return metrics, kept


def _log_artifacts(cfg: DictConfig, model, fold_dir: Path, overlays, index: int, test_overlays=()) -> None:
    from bookseg.data.viz import draw_instances, save_image, side_by_side

    run = mlflow.active_run()
    client = mlflow.MlflowClient()
    history = _history_from_mlflow(client, run.info.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plot_loss_curves(history, tmp / "loss_curves.png", title=member_name(index))
        mlflow.log_artifact(str(tmp / "loss_curves.png"))
        for prefix, kept in (("val", overlays), ("test", test_overlays)):
            for i, (record, image, pred) in enumerate(kept):
                gt = draw_instances(image, record.masks())
                dt = draw_instances(image, pred["masks"], scores=pred["scores"])
                path = tmp / f"{prefix}_{i:02d}_{Path(record.image_id).stem}.jpg"
                save_image(path, side_by_side(gt, dt))
                mlflow.log_artifact(str(path), "overlays")
        if cfg.tracking.log_weights:
            weights = tmp / f"mask_rcnn_{member_name(index)}.weights.h5"
            model.save_weights(str(weights))
            mlflow.log_artifact(str(weights), "weights")
    tb = fold_dir / "tensorboard"
    if tb.exists():
        mlflow.log_artifacts(str(tb), "tensorboard")


def _history_from_mlflow(client, run_id: str) -> list[dict]:
    """Per-epoch logs rebuilt from the run's metric history (complete even after a resume)."""
    from bookseg.mrcnn.config import LOSS_NAMES

    by_epoch: dict[int, dict] = {}
    for name in ("loss",) + LOSS_NAMES:
        for split, prefix in (("train", ""), ("val", "val_")):
            for m in client.get_metric_history(run_id, f"{split}/{name}"):
                by_epoch.setdefault(m.step, {})[prefix + name] = m.value
    return [by_epoch[e] for e in sorted(by_epoch)]
