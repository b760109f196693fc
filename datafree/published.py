"""The published numbers every result is compared with, and what kind of comparison each is.

One lookup for the launchers' headers (``scripts/make_launchers.py``), the README's tables and
``python -m datafree.report``, which prints the published number beside each measured cell.
Every number is a best-epoch test top-1 (model selection on the test set, docs/METHODS.md §6.1).

A method's numbers live in its recipe, beside its class (``RECIPE``, ``Recipe.published``:
:mod:`datafree.synthesis.recipe`); :func:`published` and ``PUBLISHED`` read the recipes of the
registered methods. This module holds what several recipes and the report share: the pair grid,
the source of the CuDFKD paper's table, the accuracies of the models trained with data (§2.2,
§20.1) and the other rows of DAFL's MNIST table.

Each cell has a *kind* (docs/METHODS.md §5.10):

* ``reproduction`` — the launcher runs the published configuration of exactly that cell;
* ``re-run`` — the baselines: their published numbers come from CMI's unreleased code (§4.7),
  so the launcher re-runs the released recipe and a difference is not evidence of a bug;
* ``config not published`` — a reported number without a script for that cell; the launcher
  copies the closest row (§5.8, §12.6);
* ``different expectation`` — the launcher runs a variant whose own expectation differs from the
  table (scratch CMI on CIFAR-10 wrn40_2→wrn16_1: about 88.82, not the 90.01 of adversarial CMI);
* ``alternative state`` — another real reference state of the same cell (CuDFKD's late-2022
  scripts, §5.8); how it relates to the published number is unknown;
* ``read off a figure`` — NAYER: the repository has only a figure (§11.9, §13 item 1);
* ``reconstruction`` — the method has no public code: its launcher runs this benchmark's
  reconstruction (MB-DFKD, §15), so the published number is what the paper's own code reached, not
  what this code is known to reach.

A number may carry the paper's stability row (``stability``: mean μ, variance σ² and best of the
test top-1 over the epochs of a run; the seed's DFAD, MB-DFKD and PRE-DFKD rows,
§14.7, §15.3, §16.7), which the report prints beside a measured cell's μ / σ².

MNIST (§20.1): DAFL's two cells, the teachers and students trained with data, and the other rows
of DAFL's Table 1 (KD on data, noise, USPS, meta-data), which the report prints beside a measured
MNIST cell.

Tiny-ImageNet and ImageNet (§18.5, §19.4): the published cells of ljrprocc's 64-px scripts, Fast-50
and DeepInversion (``LARGE_PAIRS``), and the top-1 of their models trained with data: ljrprocc's
released teachers and torchvision's documented accuracies (``SCRATCH_LARGE``, with sources).

A variant is the ``--log_tag`` a launcher passes (``late2022``, ``fast2``, ``nayer200``, ...);
the default configuration of a method has the variant ``""``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # the recipe module imports this one
    from datafree.synthesis.recipe import Recipe

PAIRS: dict[str, list[tuple[str, str]]] = {
    "cifar10": [("resnet34", "resnet18"), ("vgg11", "resnet18"), ("wrn40_2", "wrn40_1"),
                ("wrn40_2", "wrn16_2"), ("wrn40_2", "wrn16_1")],
    "cifar100": [("resnet34", "resnet18"), ("vgg11", "resnet18"), ("wrn40_2", "wrn40_1"),
                 ("wrn40_2", "wrn16_2"), ("wrn40_2", "wrn16_1")],
}
#: The CuDFKD paper's grid (§5.9): no CIFAR-100 wrn40_2→wrn16_1 column.
PAPER_CELLS: list[tuple[str, str, str]] = [(d, t, s) for d, pairs in PAIRS.items() for t, s in pairs
                                           if (d, t, s) != ("cifar100", "wrn40_2", "wrn16_1")]
ALL_CELLS: list[tuple[str, str, str]] = [(d, t, s) for d, pairs in PAIRS.items() for t, s in pairs]

#: Teachers and scratch students trained with data (§2.2): model -> (role, CIFAR-10, CIFAR-100).
SCRATCH: dict[str, tuple[str, float, float]] = {
    "resnet34": ("teacher", 95.70, 78.05), "vgg11": ("teacher", 92.25, 71.32), "wrn40_2": ("teacher", 94.87, 75.83),
    "resnet18": ("student", 95.20, 77.10), "wrn16_1": ("student", 91.12, 65.31),
    "wrn40_1": ("student", 93.94, 72.19), "wrn16_2": ("student", 93.95, 73.56),
}

# --------------------------------------------------------------------------- 64 px and 224 px (§18.5, §19.4)
#: The published Tiny-ImageNet and ImageNet cells (dataset -> [(teacher, student)]): ljrprocc's scripts run
#: its torchvision-layout ResNets on Tiny-ImageNet (the driver renames resnetNN to resnetNN_imagenet, §18.4);
#: Fast-50 and DeepInversion run torchvision's models on ImageNet (§19.2).
LARGE_PAIRS: dict[str, list[tuple[str, str]]] = {
    "tiny_imagenet": [("resnet50_imagenet", "resnet18_imagenet"), ("resnet34_imagenet", "resnet18_imagenet")],
    "imagenet": [("tv_resnet50", "tv_resnet50"), ("tv_resnet50", "tv_resnet18"), ("tv_resnet50", "tv_mobilenet_v2")],
}
#: Where the 64-px models' top-1 comes from: ljrprocc's released Tiny-ImageNet teachers (§18.4).
LJRPROCC_TEACHERS = "ljrprocc/DFKD README @cd281c4, its released Tiny-ImageNet teachers, §18.4"
#: Where the 224-px models' top-1 comes from (§19.2).
TORCHVISION_ACCURACY = "documented by torchvision for its first weight files, not checked here, §19.2"
#: Models trained with data on the 64-px and 224-px datasets: dataset -> model -> (role, top-1, source).
#: ResNet-18 is a student of the published cells; its released Tiny-ImageNet file is its with-data top-1.
SCRATCH_LARGE: dict[str, dict[str, tuple[str, float, str]]] = {
    "tiny_imagenet": {"resnet50_imagenet": ("teacher", 67.18, LJRPROCC_TEACHERS),
                      "resnet34_imagenet": ("teacher", 62.43, LJRPROCC_TEACHERS),
                      "resnet18_imagenet": ("student", 61.48, LJRPROCC_TEACHERS)},
    "imagenet": {"tv_resnet50": ("teacher", 76.13, TORCHVISION_ACCURACY),
                 "tv_resnet18": ("student", 69.76, TORCHVISION_ACCURACY),
                 "tv_mobilenet_v2": ("student", 71.88, TORCHVISION_ACCURACY)},
}


@dataclass(frozen=True)
class Published:
    """A published number (``value``), where it comes from, and how to compare a run with it."""

    value: float
    kind: str
    source: str
    note: str = ""
    expectation: float | None = None   # what the launcher's variant should reach, when not ``value``
    stability: tuple[float, float, float] | None = None   # the paper's (μ, σ², best) over a run's epochs

    def describe_stability(self) -> str:
        """``μ / σ² / best`` of the paper's stability row, e.g. ``86.1 / 12.3 / 93.3``, or ``-``."""
        return "-" if self.stability is None else " / ".join(f"{value:g}" for value in self.stability)

    @property
    def compare_with(self) -> float:
        return self.value if self.expectation is None else self.expectation

    def describe(self) -> str:
        """E.g. ``95.28 (reproduction)`` or ``90.01 (different expectation: ≈ 88.82)``."""
        expected = "" if self.expectation is None else f": ≈ {self.expectation:.2f}"
        return f"{self.value:.2f} ({self.kind}{expected})"


# --------------------------------------------------------------------------- the CuDFKD paper's tables (§5.9)
#: Where the CuDFKD paper's table comes from: the baselines' rows and CuDFKD's (each in its recipe).
CUDFKD_SOURCE = "CuDFKD README (ljrprocc/DFKD), baselines copied from the CMI README (§5.9)"


# --------------------------------------------------------------------------- MNIST (§20.1, §20.2)
#: DAFL's MNIST cells (Table 1 of the DAFL README): (teacher, student).
MNIST_PAIRS: list[tuple[str, str]] = [("lenet5", "lenet5_half"), ("hintonnet", "hintonnet_half")]
#: Teachers and students trained with data on MNIST (DAFL Table 1): model -> (role, top-1).
SCRATCH_MNIST: dict[str, tuple[str, float]] = {
    "lenet5": ("teacher", 98.91), "lenet5_half": ("student", 98.65),
    "hintonnet": ("teacher", 98.39), "hintonnet_half": ("student", 98.11),
}
#: The other rows of DAFL's Table 1 (students of the same pair trained otherwise), for the report:
#: (teacher, student) -> [(row, top-1)]. "backprop on data" is the student trained from scratch.
DAFL_TABLE_ROWS: dict[tuple[str, str], list[tuple[str, float]]] = {
    ("lenet5", "lenet5_half"): [("teacher", 98.91), ("backprop on data", 98.65), ("KD on data", 98.91),
                                ("normal-distribution noise", 88.01), ("USPS as alternative data", 94.56),
                                ("meta-data", 92.47), ("DAFL", 98.20)],
    ("hintonnet", "hintonnet_half"): [("teacher", 98.39), ("backprop on data", 98.11), ("KD on data", 98.39),
                                      ("normal-distribution noise", 87.58), ("USPS as alternative data", 93.99),
                                      ("meta-data", 91.24), ("DAFL", 97.91)],
}


def recipes() -> dict[str, Recipe]:
    """The registered methods' recipes (``registry.METHODS``, in registry order; a method without a
    recipe is left out). The registry is imported here, when first asked for, so that importing this
    module (and the report) loads neither torch nor a method."""
    import registry

    return {name: method.recipe for name, method in registry.METHODS.items() if method.recipe is not None}


def published_numbers() -> dict[tuple[str, str, str, str, str], Published]:
    """Every published number, keyed (method, variant, dataset, teacher, student), from the recipes."""
    return {(name, *key): number for name, recipe in recipes().items() for key, number in recipe.published.items()}


def __getattr__(name: str) -> Any:
    """``PUBLISHED``: :func:`published_numbers`, read from the recipes when asked for."""
    if name == "PUBLISHED":
        return published_numbers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def published(method: str, variant: str, dataset: str, teacher: str, student: str) -> Published | None:
    """The published number of a (method, variant, dataset, teacher, student) cell, or None (its recipe's)."""
    recipe = recipes().get(method)
    return None if recipe is None else recipe.number(variant, dataset, teacher, student)


def other_rows(dataset: str, teacher: str, student: str) -> list[tuple[str, float]]:
    """The other rows a paper's table gives for this pair (MNIST: DAFL Table 1, §20.1), else []."""
    return list(DAFL_TABLE_ROWS.get((teacher, student), [])) if dataset == "mnist" else []


def scratch_accuracy(model: str, dataset: str) -> float | None:
    """Reported top-1 of ``model`` trained with data on ``dataset`` (§2.2; MNIST §20.1; Tiny-ImageNet and
    ImageNet §18.4, §19.2), or None."""
    if dataset in SCRATCH_LARGE:
        entry = SCRATCH_LARGE[dataset].get(model)
        return None if entry is None else entry[1]
    if dataset == "mnist":
        return SCRATCH_MNIST[model][1] if model in SCRATCH_MNIST else None
    if model not in SCRATCH:
        return None
    _, cifar10, cifar100 = SCRATCH[model]
    return {"cifar10": cifar10, "cifar100": cifar100}.get(dataset)
