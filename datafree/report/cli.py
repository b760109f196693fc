"""``python -m datafree.report RUN_DIR... [--out DIR] [--burn_in 80] [--tail_drop 0]``.

Loads every run directory first, so a bad one ends the command before anything is written;
then writes ``results.md``, ``accuracy.csv``, ``stability.csv`` and ``accuracy.png``. Every
foreseeable mistake (a bad flag value, an unreadable run directory, an output directory that
cannot be written) is one line ``error: ...`` on stderr and exit status 2, like the other
commands (:mod:`datafree.run.cli`, :mod:`datafree.errors`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from datafree.errors import UsageError
from datafree.report.loading import ReportError, Run, load_run
from datafree.report.plot import plot_accuracy
from datafree.report.statistics import build_cells
from datafree.report.tables import render_results_markdown, write_accuracy_csv, write_stability_csv


def write_report(runs: Sequence[Run], out_dir: Path, burn_in: int, tail_drop: int) -> tuple[str, list[Path]]:
    """Write ``results.md``, ``accuracy.csv``, ``stability.csv`` and ``accuracy.png`` to
    ``out_dir`` (created if needed). Returns the Markdown text and the paths written."""
    if not runs:
        raise ReportError("no run directories given")
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = build_cells(runs, burn_in, tail_drop)
    markdown = render_results_markdown(runs, burn_in, tail_drop)
    written = [out_dir / "results.md", out_dir / "accuracy.csv", out_dir / "stability.csv"]
    written[0].write_text(markdown, encoding="utf-8")
    write_accuracy_csv(cells, written[1])
    write_stability_csv(cells, written[2], burn_in, tail_drop)
    if plot_accuracy(runs, out_dir / "accuracy.png", burn_in):
        written.append(out_dir / "accuracy.png")
    return markdown, written


def non_negative_int(flag: str) -> Callable[[str], int]:
    """argparse ``type`` for ``flag``: an integer >= 0, else a one-line UsageError naming the flag.

    The error is raised directly (not as argparse's ``ArgumentTypeError``), so the message is
    ``--burn_in must be a non-negative integer, got 'abc'`` rather than argparse's wording with
    the name of this function in it.
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise UsageError(f"{flag} must be a non-negative integer, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``python -m datafree.report`` (one-line errors, no abbreviations)."""
    from datafree.run.cli import ArgumentParser

    parser = ArgumentParser(
        prog="python -m datafree.report",
        description="Accuracy / stability tables (METHODS.md §6.2) and accuracy plot from run directories.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to report")
    parser.add_argument("--out", default="report", help="output directory (default: ./report)")
    parser.add_argument("--burn_in", type=non_negative_int("--burn_in"), default=80,
                        help="epochs discarded before μ/σ² (default 80, §6.2)")
    parser.add_argument("--tail_drop", type=non_negative_int("--tail_drop"), default=0,
                        help="final epochs discarded from μ/σ² (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: load runs, print the Markdown report, write the files. Returns 0.

    A bad argument, any :class:`ReportError` or a failure to write the output ends with
    ``error: <message>`` on stderr and exit status 2, without a traceback.
    """
    try:
        arguments = build_parser().parse_args(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        runs = [load_run(run_dir) for run_dir in arguments.run_dirs]
        markdown, written = write_report(runs, Path(arguments.out), arguments.burn_in, arguments.tail_drop)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        print(f"error: cannot write the report to {arguments.out}: {error.strerror or error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(markdown)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
