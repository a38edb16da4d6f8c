"""Cross-validation: split once (saved as folds.json), train each fold in a child run, aggregate on the parent."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bookseg.data.folds import load_folds, make_folds, save_folds, split
from bookseg.experiment.fold import FOLD_METRICS, run_fold, total_epochs
from bookseg.sweep.trial import sweep_trial
from bookseg.tracking import FINAL
from bookseg.tracking.callbacks import JobProgress
from bookseg.tracking.mlflow_runs import RunState, open_fold_run


def prepare_folds(cfg: DictConfig, dataset, job_dir: Path) -> list[list[str]]:
    """Folds of this job: reuse `job_dir/folds.json` when resuming, else split and save."""
    path = job_dir / "folds.json"
    if path.exists():
        return load_folds(path)["folds"]
    folds = make_folds(dataset.records, cfg.cv.k, seed=cfg.cv.seed, stratify=cfg.cv.stratify)
    group_by = cfg.data.group_regex or cfg.data.group_attribute or "image"
    save_folds(
        folds,
        path,
        {
            "k": cfg.cv.k,
            "seed": cfg.cv.seed,
            "group_by": group_by,
            "groups": {r.image_id: r.group for r in dataset.records},
        },
    )
    return folds


def cross_validate(
    cfg: DictConfig, dataset, job_dir: Path, state: RunState, test=None
) -> dict[int | str, dict[str, float]]:
    """Run every selected fold not finished yet, then the final model with `cv.final`.

    Returns {fold: metrics} for all selected folds, plus {FINAL: its test metrics} with `cv.final`.

    `test`: the held-out test `Dataset` (or None); every fold model scores it (`test/<metric>`).
    """
    folds = prepare_folds(cfg, dataset, job_dir)
    mlflow.log_artifact(str(job_dir / "folds.json"))
    selected = list(cfg.cv.folds) if cfg.cv.folds is not None else list(range(cfg.cv.k))
    todo = [i for i in selected if not state.fold(i).get("metrics")]
    final_todo = cfg.cv.final and "metrics" not in state.fold(FINAL)
    progress = JobProgress(total_epochs(cfg) * (len(todo) + final_todo), cfg.stages.steps_per_epoch)
    results: dict[int, dict[str, float]] = {}
    trial = sweep_trial(cfg)  # Optuna sweep: each fold's metric is reported, a hopeless trial pruned
    for step, index in enumerate(selected):
        fold_state = state.fold(index)
        if fold_state.get("metrics"):
            print(f"fold {index}: already finished in this run, not trained again", flush=True)
            results[index] = fold_state["metrics"]
            trial.fold_done(step, results[index], last=step == len(selected) - 1)
            continue
        train, val = split(dataset.records, folds, index)
        print(f"fold {index}: {len(train)} training / {len(val)} validation images", flush=True)
        with open_fold_run(state, index):
            mlflow.log_params(
                {
                    "fold": index,
                    "n_train": len(train),
                    "n_val": len(val),
                    **({"n_test": len(test.records)} if test else {}),
                }
            )
            metrics = run_fold(
                cfg,
                index,
                train,
                val,
                dataset.class_names,
                job_dir / f"fold{index}",
                progress,
                test=test.records if test else None,
            )
        fold_state["metrics"] = metrics
        state.save()
        print(f"fold {index}: " + "  ".join(f"{k}={v:.3f}" for k, v in metrics.items()), flush=True)
        results[index] = metrics
        trial.fold_done(step, metrics, last=step == len(selected) - 1)
    if cfg.cv.final:
        results[FINAL] = train_final(cfg, dataset, job_dir, state, test, progress)
    return results


def train_final(cfg: DictConfig, dataset, job_dir: Path, state: RunState, test, progress: JobProgress):
    """`cv.final`: one model on every training image with the folds' schedule, in the child run `final`.

    It has no validation images, so it is scored on the test set only (no metrics without one).
    Resumable like a fold (`job_dir/final/checkpoints`).
    """
    final_state = state.fold(FINAL)
    if "metrics" in final_state:
        print("final model: already trained in this run, not trained again", flush=True)
        return final_state["metrics"]
    print(f"final model: {len(dataset.records)} training images", flush=True)
    with open_fold_run(state, FINAL):
        mlflow.log_params(
            {
                "fold": FINAL,
                "n_train": len(dataset.records),
                "n_val": 0,
                **({"n_test": len(test.records)} if test else {}),
            }
        )
        metrics = run_fold(
            cfg,
            FINAL,
            dataset.records,
            [],
            dataset.class_names,
            job_dir / FINAL,
            progress,
            test=test.records if test else None,
        )
    final_state["metrics"] = metrics
    state.save()
    print(
        "final model: " + ("  ".join(f"{k}={v:.3f}" for k, v in metrics.items()) or "trained (no test set)"),
        flush=True,
    )
    return metrics


def aggregate(results: dict[int | str, dict[str, float]]) -> dict[str, float]:
    """Mean and (population) std across folds of every fold metric: `cv/<name>_mean`, `cv/<name>_std`.

    A fold whose metric is undefined (NaN: no ground-truth book in its validation images) is left out of
    that metric's mean; `cv/n_folds` counts every fold run. The final model's test metrics (`cv.final`)
    are passed through as `final/test/<name>`.
    """
    folds = {i: m for i, m in results.items() if i != FINAL}
    out = {}
    names = [(f"cv/{name}", name) for name in FOLD_METRICS]
    if all(f"test/{name}" in m for m in folds.values() for name in FOLD_METRICS):
        names += [(f"test/{name}", f"test/{name}") for name in FOLD_METRICS]
    for prefix, key in names if folds else []:  # `cv.folds=[]` with `cv.final`: the final model only
        values = np.array([m[key] for m in folds.values()], float)
        finite = values[np.isfinite(values)]
        out[f"{prefix}_mean"] = float(finite.mean()) if finite.size else float("nan")
        out[f"{prefix}_std"] = float(finite.std()) if finite.size else float("nan")
    out["cv/n_folds"] = float(len(folds))
    out.update({f"final/{key}": value for key, value in results.get(FINAL, {}).items()})
    return out


def results_table(results: dict[int | str, dict[str, float]], summary: dict[str, float]) -> str:
    """Plain-text table: one row per fold, then mean ± std; a second one for the test set if scored,
    with the final model's row (`cv.final`) under the folds'."""
    names = ("mask_ap50", "mask_ap", "mask_ap75", "box_ap50", "box_ap", "mask_ap50_matterport")
    width = max(len(n) for n in names) + 2
    folds = sorted(i for i in results if i != FINAL)
    if not folds:
        final = results.get(FINAL, {})
        return "final model, held-out test set:\n" + "\n".join(
            f"  {n}: {final[f'test/{n}']:.3f}" for n in names if f"test/{n}" in final
        )
    tables = [("cv", "")] + ([("test", "test/")] if "test/mask_ap50_mean" in summary else [])
    lines = []
    for prefix, key in tables:
        if lines:
            lines += [
                "",
                "held-out test set, scored by each fold's model"
                + (" and the final model:" if FINAL in results else ":"),
            ]
        lines.append("fold".ljust(8) + "".join(n.rjust(width) for n in names))
        for index in folds:
            lines.append(
                f"{index:<8}" + "".join(f"{results[index][key + n]:.3f}".rjust(width) for n in names)
            )
        lines.append(
            "mean±std".ljust(8)
            + "".join(
                f"{summary[f'{prefix}/{n}_mean']:.3f}±{summary[f'{prefix}/{n}_std']:.3f}".rjust(width)
                for n in names
            )
        )
        if prefix == "test" and FINAL in results:
            lines.append(
                FINAL.ljust(8) + "".join(f"{results[FINAL][key + n]:.3f}".rjust(width) for n in names)
            )
    return "\n".join(lines)


def log_config(cfg: DictConfig, job_dir: Path) -> None:
    """Log the resolved config (`config.yaml`) and Hydra's own record of the job (`hydra/`)."""
    path = job_dir / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    mlflow.log_artifact(str(path))
    if HydraConfig.initialized():
        hydra_dir = Path(HydraConfig.get().runtime.output_dir) / HydraConfig.get().output_subdir
        if hydra_dir.is_dir():
            mlflow.log_artifacts(str(hydra_dir), "hydra")
