"""What identifies a table cell, and the order of cells, runs and columns in the tables.

A cell is one (method, variant, precision, dataset, teacher, student): all seeds of one
configuration. :class:`CellKey` is that identity; a :class:`~datafree.report.loading.Run` carries
the key it was read with and a :class:`~datafree.report.statistics.Cell` the key its runs share,
so the six fields exist in one place only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datafree.published import LARGE_PAIRS, recipes


def paper_method_order() -> tuple[str, ...]:
    """Method rows in the order of the paper's tables (§5.9): the registered methods by their recipe's
    ``table_row`` (methods the paper does not have come after its own). ``PAPER_METHOD_ORDER`` is
    this tuple, read from the recipes when first asked for, so that importing the report loads no method."""
    table = recipes()
    return tuple(sorted(table, key=lambda name: table[name].table_row))


def __getattr__(name: str) -> Any:
    if name == "PAPER_METHOD_ORDER":
        return paper_method_order()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Teacher→student columns in the order of the paper's tables (§5.9), then the published Tiny-ImageNet and
#: ImageNet cells in the order of theirs (§18.5, §19.4); others follow alphabetically.
PAPER_PAIR_ORDER: tuple[tuple[str, str], ...] = (
    ("resnet34", "resnet18"),
    ("vgg11", "resnet18"),
    ("wrn40_2", "wrn40_1"),
    ("wrn40_2", "wrn16_2"),
    ("wrn40_2", "wrn16_1"),
    *(pair for pairs in LARGE_PAIRS.values() for pair in pairs),
)

#: Datasets in the order of the paper's tables (§5.9), then Tiny-ImageNet and ImageNet (§18.5, §19.4); others
#: follow alphabetically.
PAPER_DATASET_ORDER: tuple[str, ...] = ("cifar10", "cifar100", "tiny_imagenet", "imagenet")

#: Label used as teacher for supervised-from-scratch runs (train_scratch.py has no teacher).
NO_TEACHER: str = "-"


def cell_label(method: str, variant: str, precision: str | None) -> str:
    """``method``, or ``method (caveat, variant, precision)`` for a method whose recipe has a caveat
    (``mbdfkd (reconstruction)``), a variant or a precision other than fp32."""
    recipe = recipes().get(method)
    caveat = recipe.caveat if recipe is not None else ""
    qualifiers = [part for part in (caveat, variant, None if precision in (None, "fp32") else precision) if part]
    return f"{method} ({', '.join(qualifiers)})" if qualifiers else method


def method_sort_key(method: str) -> tuple[int, str]:
    """Paper order for the methods with a recipe (§5.9), then the others (e.g. scratch) alphabetically."""
    order = paper_method_order()
    if method in order:
        return (order.index(method), "")
    return (len(order), method)


def pair_sort_key(teacher: str, student: str) -> tuple[int, str, str]:
    """Paper order for the five teacher→student pairs (§5.9) and the 64/224-px cells, then the others
    alphabetically."""
    if (teacher, student) in PAPER_PAIR_ORDER:
        return (PAPER_PAIR_ORDER.index((teacher, student)), "", "")
    return (len(PAPER_PAIR_ORDER), teacher, student)


def dataset_sort_key(dataset: str) -> tuple[int, str]:
    """CIFAR-10, CIFAR-100 (§5.9), Tiny-ImageNet, ImageNet, then other datasets alphabetically."""
    if dataset in PAPER_DATASET_ORDER:
        return (PAPER_DATASET_ORDER.index(dataset), "")
    return (len(PAPER_DATASET_ORDER), dataset)


@dataclass(frozen=True)
class CellKey:
    """The configuration a run measures; runs with equal keys are seeds of one table cell.

    ``variant`` is the run's ``--log_tag`` (``""`` for the method's default configuration),
    ``precision`` the ``--precision`` in its config (``None`` when the config predates the flag).
    Scratch runs (``train_scratch.py``) have method ``scratch`` and teacher ``-``.
    """

    method: str
    variant: str
    precision: str | None
    dataset: str
    teacher: str
    student: str

    @property
    def pair(self) -> str:
        """Column label ``teacher→student``."""
        return f"{self.teacher}→{self.student}"

    @property
    def label(self) -> str:
        """The method, with the variant and a precision other than fp32: ``cudfkd (late2022, bf16)``."""
        return cell_label(self.method, self.variant, self.precision)

    def sort_key(self) -> tuple:
        """Table order: method (paper order), variant, precision, dataset, pair (paper order)."""
        return (method_sort_key(self.method), self.variant, self.precision or "", dataset_sort_key(self.dataset),
                pair_sort_key(self.teacher, self.student))
