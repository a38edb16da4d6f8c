"""Loss-curve plot of one fold (training and validation, per loss), saved as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bookseg.mrcnn.config import LOSS_NAMES


def plot_loss_curves(history: list[dict], path: Path, title: str = "") -> Path:
    """Plot `loss` and the five named losses per epoch; `history` is one Keras logs dict per epoch."""
    names = ("loss",) + LOSS_NAMES
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), sharex=True)
    epochs = list(range(1, len(history) + 1))
    for ax, name in zip(axes.ravel(), names):
        for key, style, label in ((name, "-", "train"), (f"val_{name}", "--", "validation")):
            values = [logs.get(key) for logs in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [float("nan") if v is None else v for v in values], style, label=label)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
