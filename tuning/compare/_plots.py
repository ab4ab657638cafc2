"""The comparison's figures: accuracy/loss curves and per-class F1 bars (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tuning.compare._evaluate import RunEvaluation

__all__ = ["FIGURES", "plot_curves"]

#: figure name → file name in the report folder
FIGURES = {"accuracy": "accuracy.png", "loss": "loss.png", "per_class_f1": "per_class_f1.png"}


def plot_curves(runs: list[RunEvaluation], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    paths: dict[str, Path] = {}
    panels = {
        "accuracy": [("val_acc", "validation accuracy"), ("val_f1", "validation macro-F1")],
        "loss": [("train_loss", "training loss"), ("val_loss", "validation loss")],
    }
    for name, metrics in panels.items():
        fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
        for ax, (col, title) in zip(axes[0], metrics, strict=True):
            for i, r in enumerate(runs):
                h = r.history
                if col not in h or h[col].isna().all():
                    continue
                x = h["epoch"] if "epoch" in h else pd.Series(range(1, len(h) + 1))
                line = ax.plot(x, h[col], marker="o", ms=3, label=r.label, color=f"C{i}")[0]
                if "phase" in h and (h["phase"] == "head").any() and (h["phase"] != "head").any():
                    # where fine-tuning begins: the curves' kink is usually there
                    first = x[h["phase"] != "head"].iloc[0]
                    ax.axvline(first - 0.5, color=line.get_color(), ls=":", lw=1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.tight_layout()
        paths[name] = out / FIGURES[name]
        fig.savefig(paths[name], dpi=100)
        plt.close(fig)

    classes = runs[0].class_names
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(classes) * max(1, len(runs) / 2)), 4))
    for i, r in enumerate(runs):
        xs = np.arange(len(classes)) + (i - (len(runs) - 1) / 2) * width
        ax.bar(xs, r.per_class["f1"].reindex(classes).to_numpy(), width, label=r.label)
    ax.set_xticks(np.arange(len(classes)), classes, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 (validation)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths["per_class_f1"] = out / FIGURES["per_class_f1"]
    fig.savefig(paths["per_class_f1"], dpi=100)
    plt.close(fig)
    return paths


