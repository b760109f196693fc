"""Result tables (METHODS.md §6.2, §5.9) and accuracy plots from run directories.

``python -m datafree.report RUN_DIR... [--out DIR] [--burn_in 80] [--tail_drop 0]`` reads the
run directories written by ``datafree_kd.py`` / ``train_scratch.py`` (ARCHITECTURE.md, "Run
directory") and writes to ``--out`` (default ``report/``):

* ``results.md``   -- accuracy table, stability table and a per-run listing (also printed);
* ``accuracy.csv`` -- one row per (method, dataset, teacher→student) cell: best, last and
  mean of the last 5 epochs, mean and std across seeds;
* ``stability.csv`` -- one row per cell: μ, σ², best, peak memory, wall time;
* ``accuracy.png`` -- test top-1 per epoch, one line per run (skipped without matplotlib).

Why these numbers: every published number is the *best* epoch's test top-1 (§6.1), which is
model selection on the test set, so the tables also show the last epoch and the mean of the
last 5 epochs. The paper's stability claim (§5.9) is the mean μ and the population variance
σ² (ddof 0) of the per-epoch accuracy after a burn-in of 80 epochs (§6.2); the burn-in (and
the optional number of dropped final epochs) is a parameter and is always printed next to
the numbers. Several seeds of one cell are summarised per run first, then as mean ± sample
standard deviation across seeds (§6.2 [CLEAN]).

A run that stopped early (fewer epochs in ``metrics.jsonl`` than ``epochs`` in
``config.yaml``) is still reported and marked partial ("epochs done/configured"). Warm-up
epochs (Fast, NAYER: synthesis only, logged without accuracy) count as epochs done but not in
the accuracy statistics: μ/σ²'s burn-in counts KD epochs (METHODS.md §13 item 9); the plot
draws each accuracy at its true epoch.

Runs are grouped into cells by method, variant (the run's ``--log_tag``, e.g. ``late2022`` or
``fast2``), precision, dataset and pair (:class:`CellKey`); a label such as
``cudfkd (late2022, bf16)`` names a cell that is not the method's default fp32 configuration.

The package, by concern:

* :mod:`~datafree.report.keys` -- :class:`CellKey` and the paper's order of rows and columns;
* :mod:`~datafree.report.loading` -- run directories into :class:`Run` (``metrics.jsonl`` via
  :mod:`datafree.metrics_log`, the reader the run lifecycle uses too);
* :mod:`~datafree.report.statistics` -- :func:`stats`, :func:`summarize_across_seeds`, cells;
* :mod:`~datafree.report.tables` -- ``results.md`` and the two CSV files;
* :mod:`~datafree.report.plot` -- ``accuracy.png`` (matplotlib imported only there, when called);
* :mod:`~datafree.report.cli` -- :func:`write_report`, the parser and :func:`main`.
"""
from datafree.report.cli import build_parser, main, non_negative_int, write_report
from datafree.report.keys import (
    NO_TEACHER,
    PAPER_DATASET_ORDER,
    PAPER_PAIR_ORDER,
    CellKey,
    cell_label,
    dataset_sort_key,
    method_sort_key,
    pair_sort_key,
    paper_method_order,
)
from datafree.report.loading import FIDELITY_KEYS, ReportError, Run, load_run, run_sort_key
from datafree.report.plot import plot_accuracy
from datafree.report.statistics import (
    LAST_EPOCHS_AVERAGED,
    Cell,
    build_cells,
    run_quantities,
    stats,
    summarize_across_seeds,
)
from datafree.report.tables import (
    ACCURACY_QUANTITIES,
    NOT_AVAILABLE_SHORT_RUN,
    PARTIAL_MARK,
    STABILITY_QUANTITIES,
    Column,
    Quantity,
    render_accuracy_markdown,
    render_comparison_markdown,
    render_results_markdown,
    render_runs_markdown,
    render_stability_markdown,
    window_description,
    write_accuracy_csv,
    write_stability_csv,
)

__all__ = [
    "ACCURACY_QUANTITIES", "FIDELITY_KEYS", "LAST_EPOCHS_AVERAGED", "NOT_AVAILABLE_SHORT_RUN", "NO_TEACHER",
    "PAPER_DATASET_ORDER", "PAPER_METHOD_ORDER", "PAPER_PAIR_ORDER", "PARTIAL_MARK", "STABILITY_QUANTITIES",
    "Cell", "CellKey", "Column", "Quantity", "ReportError", "Run",
    "build_cells", "build_parser", "cell_label", "dataset_sort_key", "load_run", "main", "method_sort_key",
    "non_negative_int", "pair_sort_key", "paper_method_order", "plot_accuracy", "render_accuracy_markdown",
    "render_comparison_markdown", "render_results_markdown", "render_runs_markdown", "render_stability_markdown",
    "run_quantities",
    "run_sort_key", "stats", "summarize_across_seeds", "window_description", "write_accuracy_csv", "write_report",
    "write_stability_csv",
]


def __getattr__(name: str) -> tuple[str, ...]:
    """``PAPER_METHOD_ORDER`` (:func:`paper_method_order`): read from the methods' recipes when asked for."""
    if name == "PAPER_METHOD_ORDER":
        return paper_method_order()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
