"""Typed, frozen method options: each flag's type, help text and check declared once (docs/ARCHITECTURE.md).

A synthesizer declares ``class Options(<parent>.Options)``, a frozen dataclass whose fields are
the flags it reads. A field is declared once, with :func:`option` (help text and check), by the
class that introduces it; a method sets its published values in ``DEFAULTS`` and, where a
dataset's published row differs, in ``ROWS`` (e.g. CuDFKD's CIFAR-100 row, §5.8; DAFL's MNIST
row, §20.1). Resolution is one way::

    given flags  >  ROWS[dataset]  >  DEFAULTS (nearest class first)  >  the field's own default

then :meth:`Options.derive` fills values computed from others (Fast's variant, §10.8; CuDFKD's
pace growth, §5.4), every field is checked (finite numbers, its declared range, its choices)
and :meth:`Options.validate` checks what relates several fields. The command line is generated
from the union of the registered methods' options (:func:`add_option_flags`); ``--help`` prints
each method's resolved default, and a flag that the chosen method does not read is refused in
one line that names the methods that read it (:func:`refuse_foreign_flags`). ``config.yaml``
holds :meth:`Options.as_config`, which is also what ``--resume`` compares.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping, TypeVar

from datafree.errors import UsageError

#: Ranges a field may declare: name -> (predicate, how the one-line error states it).
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "positive": (lambda value: value > 0, "must be positive"),
    "non_negative": (lambda value: value >= 0, "must be >= 0"),
    "unit": (lambda value: 0 <= value < 1, "must be in [0, 1)"),
    "fraction": (lambda value: 0 <= value <= 1, "must be in [0, 1]"),
    "open_fraction": (lambda value: 0 < value <= 1, "must be in (0, 1]"),
}

OptionsType = TypeVar("OptionsType", bound="Options")


def option(default: Any, help: str, check: str | None = None, choices: Iterable[str] | None = None) -> Any:
    """A flag: its field default (before any method's ``DEFAULTS``), help text, range check and choices."""
    if check is not None and check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; one of {sorted(CHECKS)}")
    return field(default=default, metadata={"help": help, "check": check,
                                            "choices": tuple(choices) if choices is not None else None})


def context(default: Any) -> Any:
    """A value the run supplies (the dataset, its class count), not a flag."""
    return field(default=default, metadata={"context": True})


def derived(default: Any = None) -> Any:
    """A value :meth:`Options.derive` computes (e.g. a file's SHA-256): in ``config.yaml``, not a flag."""
    return field(default=default, metadata={"derived": True})


@dataclass(frozen=True)
class Options:
    """The base of every method's options: the run's context, which methods may read (§20)."""

    #: Published values of this method, by field (the nearest class's value wins).
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    #: Per-dataset published rows that replace several defaults at once: ``{"cifar100": {...}}``.
    ROWS: ClassVar[dict[str, dict[str, Any]]] = {}

    dataset: str = context("cifar10")
    num_classes: int = context(10)

    def __post_init__(self) -> None:
        self.derive()
        self.check_fields()
        self.validate()

    # ------------------------------------------------------------------ hooks of a method
    def derive(self) -> None:
        """Fill fields computed from others (``None`` means "derived"), with :meth:`set`."""

    def validate(self) -> None:
        """Raise UsageError, in one line, for values that are wrong together (call super())."""

    def set(self, name: str, value: Any) -> None:
        """Set a derived field (the options are frozen once built)."""
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ resolution
    @classmethod
    def flags(cls) -> list[dataclasses.Field]:
        """The fields that are command-line flags (not the run's context, not derived values)."""
        return [f for f in dataclasses.fields(cls) if "help" in f.metadata]

    @classmethod
    def flag_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in cls.flags())

    @classmethod
    def published(cls, dataset: str) -> dict[str, Any]:
        """Every flag's default for ``dataset``: the field default, then ``DEFAULTS`` from the most
        general class to this one, then this class's ``ROWS[dataset]``."""
        values = {f.name: f.default for f in cls.flags()}
        for klass in reversed(cls.__mro__):
            values.update(klass.__dict__.get("DEFAULTS", {}))
        values.update(cls.ROWS.get(dataset, {}))
        return values

    @classmethod
    def resolve(cls: type[OptionsType], given: Mapping[str, Any] | None = None, dataset: str = "cifar10",
                num_classes: int = 10) -> OptionsType:
        """The options of a run: ``given`` values (None = not given) over the published ones."""
        given = {key: value for key, value in (given or {}).items() if value is not None}
        unknown = sorted(set(given) - cls.flag_names())
        if unknown:
            raise UsageError(f"{cls.__qualname__} has no option {', '.join(unknown)}")
        return cls(dataset=dataset, num_classes=num_classes, **{**cls.published(dataset), **given})

    def replace(self: OptionsType, **changes: Any) -> OptionsType:
        """A copy with ``changes`` applied and checked again."""
        return dataclasses.replace(self, **changes)

    def as_config(self) -> dict[str, Any]:
        """The flags and derived values, resolved, as ``config.yaml`` holds them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata.get("context")}

    @classmethod
    def from_config(cls: type[OptionsType], config: Mapping[str, Any]) -> OptionsType:
        """Rebuild (and re-check) the options from a resolved configuration."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in config.items() if key in names})

    # ------------------------------------------------------------------ checks
    def check_fields(self) -> None:
        """Each field's own check: finite numbers, its declared range, its choices, its type."""
        hints = typing.get_type_hints(type(self))
        for f in self.flags():
            value = getattr(self, f.name)
            if value is None:
                continue
            expected = value_type(hints[f.name])
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                self.set(f.name, value)
            if expected is not None and not isinstance(value, expected):
                raise UsageError(f"--{f.name} must be {'an' if expected is int else 'a'} {expected.__name__}, got {value!r}")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
                raise UsageError(f"--{f.name} must be a finite number, got {value}")
            check = f.metadata.get("check")
            if check is not None and not CHECKS[check][0](value):
                raise UsageError(f"--{f.name} {CHECKS[check][1]}, got {value}")
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise UsageError(f"--{f.name} must be one of {', '.join(choices)}, got {value!r}")


def value_type(hint: Any) -> type | None:
    """``int`` for ``int`` or ``int | None``; None for anything else."""
    arguments = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
    return arguments[0] if len(arguments) == 1 and isinstance(arguments[0], type) else None


# ---------------------------------------------------------------------- the command line
def option_readers(methods: Mapping[str, type[Options]]) -> dict[str, list[str]]:
    """Flag name -> the methods (name -> Options class, registry order) whose options read it."""
    readers: dict[str, list[str]] = {}
    for name, options in methods.items():
        for flag in options.flag_names():
            readers.setdefault(flag, []).append(name)
    return readers


def declaring_class(options: type[Options], name: str) -> type:
    """The most general Options class that declares field ``name`` (where its help lives)."""
    for klass in reversed(options.__mro__):
        if name in klass.__dict__.get("__annotations__", {}):
            return klass
    raise KeyError(name)


def default_summary(methods: Mapping[str, type[Options]], name: str) -> str:
    """Each method's resolved default of flag ``name``: "dafl, dfq 1e-3; adi 0.1 (cifar100: 0.2)"."""
    by_value: dict[str, list[str]] = {}
    for method_name, options in methods.items():
        if name not in options.flag_names():
            continue
        default = options.published("")[name]
        text = show(default)
        rows = [f"{dataset}: {show(row[name])}" for dataset, row in options.ROWS.items()
                if name in row and row[name] != default]
        if rows:
            text += f" ({', '.join(rows)})"
        by_value.setdefault(text, []).append(method_name)
    if len(by_value) == 1:
        return next(iter(by_value))
    return "; ".join(f"{', '.join(names)} {text}" for text, names in by_value.items())


def show(value: Any) -> str:
    """A default as ``--help`` prints it (None: computed from other options, see the help text)."""
    if value is None:
        return "derived"
    if value == "":
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_option_flags(parser: argparse.ArgumentParser, methods: Mapping[str, type[Options]]) -> None:
    """One flag per field of the methods' options (name -> Options class), grouped by the class that
    declares it. Every flag defaults to None ("the method's value"); the help ends with each method's
    resolved default."""
    groups: dict[type, argparse._ArgumentGroup] = {}
    added: set[str] = set()
    for options in methods.values():
        hints = typing.get_type_hints(options)
        for f in options.flags():
            if f.name in added:
                continue
            added.add(f.name)
            owner = declaring_class(options, f.name)
            if owner not in groups:
                doc = (owner.__doc__ or owner.__qualname__).strip().splitlines()[0]
                groups[owner] = parser.add_argument_group(doc)
            help_text = f"{f.metadata['help']} [default: {default_summary(methods, f.name)}]".replace("%", "%%")
            kind = value_type(hints[f.name])
            if kind is bool:
                groups[owner].add_argument(f"--{f.name}", action="store_true", default=None, help=help_text)
            else:
                groups[owner].add_argument(f"--{f.name}", type=kind or str, default=None,
                                           choices=f.metadata.get("choices"), help=help_text)


def refuse_foreign_flags(given: Mapping[str, Any], method_name: str, methods: Mapping[str, type[Options]]) -> None:
    """One-line refusal of a given flag that ``method_name`` does not read, naming the methods that do."""
    readers = option_readers(methods)
    own = methods[method_name].flag_names()
    for name, value in given.items():
        if value is not None and name in readers and name not in own:
            raise UsageError(f"--{name} is not an option of --method {method_name}; it is read by "
                             f"{', '.join(readers[name])}: drop it or pick one of those methods")
