"""``accuracy.png``: test top-1 per epoch, one line per run.

matplotlib is imported inside :func:`plot_accuracy` only, so the tables work without it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from datafree.report.loading import Run, run_sort_key


def plot_accuracy(runs: Sequence[Run], path: Path, burn_in: int) -> bool:
    """Write ``accuracy.png``: test top-1 per epoch, one line per run (label: method, dataset,
    pair, seed; partial runs say so), the burn-in marked by a dashed vertical line.

    Each accuracy is drawn at its true 0-based epoch number (:attr:`Run.accuracy_epochs`), so a
    run with warm-up epochs (logged without accuracy) starts after them instead of at epoch 0.
    Uses matplotlib's object-oriented API with the Agg canvas (no pyplot, no global backend
    switch). Returns False, after printing a one-line note, when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print("note: matplotlib is not installed; accuracy.png skipped")
        return False
    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for run in sorted(runs, key=run_sort_key):
        seed = "-" if run.seed is None else str(run.seed)
        label = f"{run.key.label} {run.key.dataset} {run.key.pair} seed {seed}"
        if run.is_partial:
            label += f" (partial {run.progress})"
        axes.plot(run.accuracy_epochs, run.accuracies, label=label, linewidth=1.2)
    axes.axvline(burn_in, color="grey", linestyle="--", linewidth=0.8, label=f"burn-in {burn_in}")
    axes.set_xlabel("epoch (0-based)")
    axes.set_ylabel("test top-1 (%)")
    axes.set_title("Test top-1 accuracy per epoch")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, format="png")
    return True
