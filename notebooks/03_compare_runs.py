# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Compare experiment runs from MLflow
#
# Every `python -m bookseg.run` job is one MLflow *parent* run (its resolved config as params, the
# cross-validation summary `cv/<metric>_mean` and `cv/<metric>_std` as metrics), with one *child*
# run per fold (per-epoch `train/<loss>` and `val/<loss>`, the fold's metrics, weights and overlays).
# This notebook reads one experiment (one study: `bookseg/<study>`) and shows:
#
# 1. the parent runs with the config settings that differ between them;
# 2. the cross-validation metrics as mean ± std over folds;
# 3. `METRIC` per run with the fold spread as error bars;
# 4. the per-epoch loss curves of each fold of one run.

# %%
import os

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator
from mlflow.tracking import MlflowClient

# %% tags=["parameters"]
TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")  # as `python -m bookseg.run`
EXPERIMENT = "bookseg/default"  # MLflow experiment: bookseg/<study> (sweep presets set their own study)
METRIC = "cv/mask_ap50_mean"  # the metric plotted per run (its `_std` twin gives the error bars)
RUN_ID = None  # parent run whose fold loss curves are drawn; None: the latest finished parent run

# %% [markdown]
# ## Parent runs
#
# Child runs carry the tag `mlflow.parentRunId`; the parent runs are the others. Params are the
# flattened resolved config, so the columns that differ between runs are the experiment's variables.

# %%
mlflow.set_tracking_uri(TRACKING_URI)
client = MlflowClient()
experiment = client.get_experiment_by_name(EXPERIMENT)
if experiment is None:
    names = [e.name for e in client.search_experiments()]
    raise ValueError(f"no experiment {EXPERIMENT!r} in {TRACKING_URI}; experiments there: {names}")
runs = mlflow.search_runs(experiment_ids=[experiment.experiment_id], max_results=5000)
if runs.empty:
    raise ValueError(f"experiment {EXPERIMENT!r} has no runs yet: run `python -m bookseg.run` first")
is_child = runs["tags.mlflow.parentRunId"].notna() if "tags.mlflow.parentRunId" in runs else False
parents = runs[~is_child].sort_values("start_time").reset_index(drop=True)
children = runs[is_child]
parents["name"] = [
    f"{name} ({run_id[:6]})" for name, run_id in zip(parents["tags.mlflow.runName"], parents["run_id"])
]
print(
    f"{EXPERIMENT}: {len(parents)} parent runs, {len(children)} fold runs "
    f"({', '.join(f'{n} {s.lower()}' for s, n in parents['status'].value_counts().items())})"
)

param_columns = [c for c in parents.columns if c.startswith("params.")]
varying = [c for c in param_columns if parents[c].astype(str).nunique(dropna=False) > 1]
overview = parents.set_index("name")[["status", "start_time", "tags.bookseg.overrides", *varying]]
overview.columns = [c.removeprefix("params.").removeprefix("tags.bookseg.") for c in overview.columns]
print(
    f"config settings that differ between the runs: {[c.removeprefix('params.') for c in varying] or 'none'}"
)
overview  # noqa: B018  (the last expression of a cell is displayed)

# %% [markdown]
# ## Cross-validation metrics, mean ± std over folds
#
# COCO-style mask and box AP (`mask_ap` averages IoU 0.5:0.95, `mask_ap50` is at IoU 0.5) and
# matterport's AP@0.5. `cv/n_folds` counts the folds each mean is over.

# %%
metric_names = sorted(
    c[len("metrics.cv/") : -len("_mean")]
    for c in parents.columns
    if c.startswith("metrics.cv/") and c.endswith("_mean")
)
summary = pd.DataFrame(
    {
        name: [
            f"{mean:.3f} ± {std:.3f}" if np.isfinite(mean) else "n/a"
            for mean, std in zip(parents[f"metrics.cv/{name}_mean"], parents[f"metrics.cv/{name}_std"])
        ]
        for name in metric_names
    },
    index=parents["name"],
)
if "metrics.cv/n_folds" in parents:
    summary["folds"] = parents["metrics.cv/n_folds"].fillna(0).astype(int).to_numpy()
best = parents[f"metrics.{METRIC}"].idxmax() if parents[f"metrics.{METRIC}"].notna().any() else None
if best is not None:
    print(f"best run by {METRIC}: {parents.loc[best, 'name']} = {parents.loc[best, f'metrics.{METRIC}']:.4f}")
summary  # noqa: B018

# %%
mean_column = f"metrics.{METRIC}"
std_column = mean_column.removesuffix("_mean") + "_std"
finished = parents[parents[mean_column].notna()]
fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(finished) + 2), 4))
ax.errorbar(
    np.arange(len(finished)), finished[mean_column], yerr=finished.get(std_column), fmt="o", capsize=5
)
ax.set_xticks(np.arange(len(finished)), finished["name"], rotation=30, ha="right", fontsize=8)
ax.set(ylabel=METRIC.removeprefix("cv/"), title=f"{METRIC} per run (error bars: std over folds)")
ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Loss curves of one run's folds
#
# The fold runs log every epoch's mean training loss (`train/<name>`, solid) and validation loss
# (`val/<name>`, dashed) with the epoch as step; `get_metric_history` returns all of them, also
# after a resumed run.

# %%
if RUN_ID is None:
    done = parents[parents["status"] == "FINISHED"]
    RUN_ID = (done if len(done) else parents).iloc[-1]["run_id"]
folds = children[children["tags.mlflow.parentRunId"] == RUN_ID].sort_values("tags.fold")
loss_names = sorted(
    {
        c[len("metrics.train/") :]
        for c in folds.columns
        if c.startswith("metrics.train/") and c.endswith("loss") and folds[c].notna().any()
    }
)
print(f"run {RUN_ID}: {len(folds)} folds, losses {loss_names}")
columns = min(3, max(len(loss_names), 1))
rows = -(-max(len(loss_names), 1) // columns)
fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.2 * rows), squeeze=False)
for ax, loss in zip(axes.flat, loss_names):
    for color, (_, fold) in zip(plt.cm.tab10.colors, folds.iterrows()):
        for split, style in (("train", "-"), ("val", "--")):
            history = sorted(
                client.get_metric_history(fold["run_id"], f"{split}/{loss}"), key=lambda m: m.step
            )
            if history:
                ax.plot(
                    [m.step for m in history],
                    [m.value for m in history],
                    style,
                    color=color,
                    marker=".",
                    label=f"fold {fold['tags.fold']} {split}",
                )
    ax.set(title=loss, xlabel="epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
for ax in list(axes.flat)[len(loss_names) :]:
    ax.axis("off")
axes.flat[0].legend(fontsize=7)
fig.suptitle(f"{parents.set_index('run_id').loc[RUN_ID, 'name']}: per-epoch losses", fontsize=10)
fig.tight_layout()
plt.show()
