"""Errors that end a command with a one-line message instead of a traceback.

Every user mistake the benchmark can foresee (unknown names, inconsistent sizes, a wrong
checkpoint, a missing dataset, a run directory that already holds a run) raises a subclass
of :class:`UsageError`. The command-line entry points catch it, print ``error: <message>``
and exit with status 2 (see :func:`datafree.run.cli.run_cli`).
"""


class UsageError(Exception):
    """A problem with the user's input; the message says how to fix it, on one line."""


class CheckpointError(UsageError):
    """A checkpoint is missing, corrupt, or was written for another model / class count / dataset."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the message names epoch, step and loss term."""


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of an error's message, cut at a word boundary (with "...") beyond ``limit`` characters."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(" ,.;:") + " ..."
