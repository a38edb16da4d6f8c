"""Plots of `bookseg report`: metrics per run with their fold spread, and fold-averaged loss curves."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator


def plot_metrics(runs, metrics: list[str], labels: list[str], path: Path, best: str | None = None) -> Path:
    """One panel per metric: per run a bar at the cross-fold mean, ± std whiskers, one dot per fold.

    Args:
        runs: `ComparedRun`s (their `mean_std(metric)` and `fold_metrics`).
        metrics: metric names (fold runs log them under this name, parents as `cv/<name>_mean`).
        labels: legend text per run (the x axis shows the run numbers 1..N).
        path: PNG to write.
        best: run id drawn in a darker colour.
    """
    n = max(len(metrics), 1)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 0.5, 2.8 * rows + 0.8), squeeze=False)
    x = np.arange(1, len(runs) + 1)
    for ax, metric in zip(axes.ravel(), metrics):
        means = [run.mean_std(metric)[0] for run in runs]
        stds = [run.mean_std(metric)[1] for run in runs]
        colours = ["tab:blue" if run.run_id == best else "lightsteelblue" for run in runs]
        ax.bar(x, np.nan_to_num(means), yerr=np.nan_to_num(stds), color=colours, capsize=3, width=0.6)
        for xi, run in zip(x, runs):
            folds = [m[metric] for m in run.fold_metrics if metric in m and math.isfinite(m[metric])]
            spread = np.linspace(-0.15, 0.15, len(folds)) if len(folds) > 1 else [0.0] * len(folds)
            ax.plot(xi + np.asarray(spread), folds, "o", color="black", markersize=3.5)
        tops = [v for m, sd in zip(means, stds) for v in (m + np.nan_to_num(sd),) if math.isfinite(v)]
        tops += [
            f[metric] for run in runs for f in run.fold_metrics if math.isfinite(f.get(metric, math.nan))
        ]
        top = max(tops, default=0.0)
        ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)  # AP metrics: the zero line is meaningful
        ax.set_title(metric, fontsize=10)
        ax.set_xticks(x)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.ravel()[len(metrics) :]:
        ax.axis("off")
    fig.suptitle("mean ± std across folds (bars), each fold (dots)", fontsize=10)
    fig.text(0.01, 0.01, "\n".join(labels), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.03 + 0.022 * len(labels), 1, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def mean_curve(histories: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over folds per epoch of [(epoch, value), ...] histories (a fold missing an epoch is skipped).

    Returns:
        epochs int [E] sorted, mean float [E] over the finite values logged at each epoch.
    """
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for step, value in history:
            if math.isfinite(value):
                by_epoch.setdefault(int(step), []).append(float(value))
    epochs = np.array(sorted(by_epoch), int)
    return epochs, np.array([np.mean(by_epoch[e]) for e in epochs], float)


def plot_loss_curves(runs, labels: list[str], keys, path: Path) -> Path:
    """One panel per key (`train/loss`, `val/loss`): per run the fold-mean loss per epoch."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        drawn = False
        for label, run in zip(labels, runs):
            epochs, mean = mean_curve(run.loss_history.get(key, []))
            if epochs.size:
                ax.plot(epochs, mean, "o-" if epochs.size < 3 else "-", label=label, markersize=3)
                drawn = True
        ax.set_title(f"{key} (mean over folds)", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
