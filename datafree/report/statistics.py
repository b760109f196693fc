"""The numbers of the tables: per-run statistics (§6.1, §6.2) and their summary across seeds.

Every published number is the *best* epoch's test top-1 (§6.1), which is model selection on
the test set, so the tables also show the last epoch and the mean of the last 5 epochs. The
paper's stability claim (§5.9) is the mean μ and the population variance σ² (ddof 0) of the
per-epoch accuracy after a burn-in (§6.2). Several seeds of one cell are summarised per run
first, then as mean ± sample standard deviation across seeds (§6.2 [CLEAN]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from datafree.published import Published, published, scratch_accuracy
from datafree.report.keys import CellKey
from datafree.report.loading import FIDELITY_KEYS, Run, run_sort_key

#: Number of final epochs averaged for the "mean of the last 5 epochs" column (§6.1).
LAST_EPOCHS_AVERAGED: int = 5


def _mean(values: Sequence[float]) -> float:
    """Arithmetic mean using an exactly rounded sum (so hand-computed test values match)."""
    return math.fsum(values) / len(values)


def _population_variance(values: Sequence[float]) -> float:
    """Population variance, ddof 0: mean of squared deviations from the mean (§6.2)."""
    center = _mean(values)
    return math.fsum((value - center) ** 2 for value in values) / len(values)


def stats(acc_per_epoch: Sequence[float], burn_in: int = 80, tail_drop: int = 0) -> dict[str, Any]:
    """Per-run accuracy statistics of §6.1 / §6.2.

    ``acc_per_epoch[i]`` is the test top-1 (percent) after the ``i``-th evaluated epoch
    (0-based; warm-up epochs are not in the list, so the burn-in counts KD epochs, §13 item 9).

    Returns a dict with
      * ``mu``, ``var``: mean and population variance (ddof 0) of
        ``acc[burn_in : len(acc) - tail_drop]``; both ``None`` when that window is empty
        (the run is shorter than the burn-in);
      * ``best``: max over *all* epochs, ``best_epoch``: its first 0-based index;
      * ``last``: the final epoch, ``mean_last5``: mean of the last 5 epochs (fewer if the run
        is shorter);
      * ``epochs``: the number of epochs given.
    """
    if burn_in < 0 or tail_drop < 0:
        raise ValueError(f"burn_in and tail_drop must be >= 0, got {burn_in} and {tail_drop}")
    accuracies = [float(value) for value in acc_per_epoch]
    if not accuracies:
        raise ValueError("stats() needs at least one epoch of accuracies")
    window = accuracies[burn_in: len(accuracies) - tail_drop]
    best = max(accuracies)
    return {
        "mu": _mean(window) if window else None,
        "var": _population_variance(window) if window else None,
        "best": best,
        "last": accuracies[-1],
        "best_epoch": accuracies.index(best),
        "mean_last5": _mean(accuracies[-LAST_EPOCHS_AVERAGED:]),
        "epochs": len(accuracies),
    }


def summarize_across_seeds(
    list_of_stats: Sequence[dict[str, Any]],
) -> dict[str, tuple[float | None, float | None]]:
    """Mean and spread of each quantity across the runs (seeds) of one cell (§6.2 [CLEAN]).

    Returns ``quantity -> (mean, std)`` for every key of the given dicts, where ``std`` is the
    *sample* standard deviation (ddof 1, the seeds being a sample of possible runs) and is
    ``None`` for a single run. A quantity that is ``None`` in any run (e.g. μ of a run shorter
    than the burn-in, peak memory of a CPU run) gives ``(None, None)``: averaging only the
    available runs would silently mix different sets of seeds.
    """
    if not list_of_stats:
        raise ValueError("summarize_across_seeds() needs at least one dict of statistics")
    keys = list(list_of_stats[0])
    for entry in list_of_stats[1:]:
        if set(entry) != set(keys):
            raise ValueError(f"statistics have different keys: {sorted(keys)} vs {sorted(entry)}")
    summary: dict[str, tuple[float | None, float | None]] = {}
    for key in keys:
        values = [entry[key] for entry in list_of_stats]
        if any(value is None for value in values):
            summary[key] = (None, None)
            continue
        center = _mean(values)
        if len(values) == 1:
            summary[key] = (center, None)
        else:
            sample_variance = math.fsum((value - center) ** 2 for value in values) / (len(values) - 1)
            summary[key] = (center, math.sqrt(sample_variance))
    return summary


def run_quantities(run: Run, burn_in: int, tail_drop: int) -> dict[str, Any]:
    """Everything reported for one run: :func:`stats` plus memory (GB), time (h), fidelity.

    Memory is converted with 1 GB = 1024 MB (the MB logged by the run lifecycle are MiB from
    ``torch.cuda.max_memory_allocated``), wall time is ``wall_seconds / 3600``.
    """
    quantities = stats(run.accuracies, burn_in=burn_in, tail_drop=tail_drop)
    quantities["peak_memory_gb"] = None if run.peak_memory_mb is None else run.peak_memory_mb / 1024.0
    quantities["wall_hours"] = run.wall_seconds / 3600.0
    for key in FIDELITY_KEYS:
        quantities[key] = run.best_fidelity.get(key)
    return quantities


@dataclass(frozen=True)
class Cell:
    """All runs (seeds) of one :class:`CellKey` and the summary of their :func:`run_quantities`."""

    key: CellKey
    runs: tuple[Run, ...]
    summary: dict[str, tuple[float | None, float | None]]

    @property
    def published(self) -> Published | None:
        """The published number this cell is compared with (datafree.published), if any."""
        key = self.key
        if key.method == "scratch":
            value = scratch_accuracy(key.student, key.dataset)
            return None if value is None else Published(value, "trained with data", "§2.2")
        return published(key.method, key.variant, key.dataset, key.teacher, key.student)

    @property
    def partial_runs(self) -> tuple[Run, ...]:
        """The unfinished runs of this cell."""
        return tuple(run for run in self.runs if run.is_partial)


def build_cells(runs: Sequence[Run], burn_in: int, tail_drop: int) -> list[Cell]:
    """Group runs by their :class:`CellKey`, summarise across seeds, and sort the cells in table
    order (:meth:`CellKey.sort_key`). Runs inside a cell are by seed."""
    groups: dict[CellKey, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    cells = []
    for key, members in groups.items():
        members = sorted(members, key=run_sort_key)
        summary = summarize_across_seeds([run_quantities(run, burn_in, tail_drop) for run in members])
        cells.append(Cell(key, tuple(members), summary))
    cells.sort(key=lambda cell: cell.key.sort_key())
    return cells
