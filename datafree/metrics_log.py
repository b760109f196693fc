"""The one reader of ``metrics.jsonl``, the per-epoch log of a run directory.

:class:`~datafree.run.directory.MetricsLogger` appends one JSON object per epoch and flushes it,
so a crash (``kill -9``, a full disk) can leave the last line cut short. Every reader of the file
goes through :func:`read_metrics_lines`, which numbers the lines as an editor does, skips blank
lines and, instead of failing on an unreadable line, says what is wrong with it. Each user then
decides what an unreadable line means:

* ``MetricsLogger`` on ``--resume`` treats it as never logged (the epoch is run again);
* ``RunLifecycle.finish`` leaves it out of ``summary.json``;
* ``datafree.report`` refuses it with an error naming the file and the line, because a table
  built from a damaged log would be silently wrong.

This module sits below both the run lifecycle and the report and imports neither.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MetricsLine:
    """One non-blank line of ``metrics.jsonl``.

    ``number`` is 1-based (for messages), ``text`` the line as written. ``record`` is the JSON
    object on the line, or ``None`` when the line is not one; ``problem`` then says why
    (``malformed JSON (...)`` or ``expected a JSON object, got list``).
    """

    number: int
    text: str
    record: dict[str, Any] | None
    problem: str | None

    @property
    def epoch(self) -> int | None:
        """The record's integer ``epoch``; ``None`` for an unreadable line or a missing / non-integer epoch."""
        if self.record is None:
            return None
        epoch = self.record.get("epoch")
        return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def parse_metrics_line(number: int, text: str) -> MetricsLine:
    """Parse one line; a line that is not a JSON object gets ``record=None`` and a ``problem``."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return MetricsLine(number, text, None, f"malformed JSON ({error.msg})")
    if not isinstance(record, dict):
        return MetricsLine(number, text, None, f"expected a JSON object, got {type(record).__name__}")
    return MetricsLine(number, text, record, None)


def read_metrics_lines(path: Path) -> list[MetricsLine]:
    """Every non-blank line of the ``metrics.jsonl`` at ``path``, in file order.

    Raises ``OSError`` / ``UnicodeDecodeError`` when the file cannot be read; the caller knows
    whether that is a user's mistake (the report) or a broken run directory (resume).
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [parse_metrics_line(number, text) for number, text in enumerate(lines, start=1) if text.strip()]


def readable_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of ``metrics.jsonl`` in file order, without unreadable (cut) lines."""
    return [line.record for line in read_metrics_lines(path) if line.record is not None]
