"""The published numbers every result is compared with, and what kind of comparison each is.

One table for the launchers' headers (``scripts/make_launchers.py``), the README's tables and
``python -m datafree.report``, which prints the published number beside each measured cell.
Every number is a best-epoch test top-1 (model selection on the test set, docs/METHODS.md §6.1).

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
* ``read off a figure`` — NAYER: the repository has only a figure (§11.9, §13 item 1).

MNIST (§20.1): DAFL's two cells, the teachers and students trained with data, and the other rows
of DAFL's Table 1 (KD on data, noise, USPS, meta-data), which the report prints beside a measured
MNIST cell.

A variant is the ``--log_tag`` a launcher passes (``late2022``, ``fast2``, ``nayer200``, ...);
the default configuration of a method has the variant ``""``.
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Published:
    """A published number (``value``), where it comes from, and how to compare a run with it."""

    value: float
    kind: str
    source: str
    note: str = ""
    expectation: float | None = None   # what the launcher's variant should reach, when not ``value``

    @property
    def compare_with(self) -> float:
        return self.value if self.expectation is None else self.expectation

    def describe(self) -> str:
        """E.g. ``95.28 (reproduction)`` or ``90.01 (different expectation: ≈ 88.82)``."""
        expected = "" if self.expectation is None else f": ≈ {self.expectation:.2f}"
        return f"{self.value:.2f} ({self.kind}{expected})"


# --------------------------------------------------------------------------- the CuDFKD paper's tables (§5.9)
_C10 = {"dafl": [92.22, 81.10, 81.33, 81.55, 72.15], "zskt": [93.32, 89.46, 86.07, 89.66, 83.74],
        "adi": [93.26, 90.36, 86.85, 89.72, 83.01], "dfq": [94.61, 90.84, 91.69, 92.01, 86.14],
        "cmi": [94.84, 91.13, 92.78, 92.52, 90.01], "cudfkd": [95.28, 91.61, 93.18, 92.98, 88.77]}
_C100 = {"dafl": [74.47, 57.29, 34.66, 40.00], "zskt": [67.74, 34.72, 29.73, 28.44],
         "adi": [61.32, 54.13, 61.33, 61.34], "dfq": [77.01, 68.32, 61.92, 59.01],
         "cmi": [77.02, 70.56, 68.88, 68.57], "cudfkd": [75.87, 71.22, 66.43, 65.94]}
_NOTES = {("dafl", "cifar10", "wrn40_2", "wrn16_1"): "CMI README: 65.71",
          ("adi", "cifar10", "wrn40_2", "wrn16_1"): "CMI README: 83.04",
          ("dfq", "cifar100", "wrn40_2", "wrn40_1"): "CMI README: 62.92",
          ("cmi", "cifar100", "resnet34", "resnet18"): "CMI README: 77.04",
          ("cmi", "cifar100", "wrn40_2", "wrn16_2"): "CMI README: 68.75"}
CUDFKD_SOURCE = "CuDFKD README (ljrprocc/DFKD), baselines copied from the CMI README (§5.9)"
#: CuDFKD cells whose launcher runs the published script of exactly that cell (§5.8, paper-era where one exists).
CUDFKD_REPRODUCED = {("cifar10", "resnet34", "resnet18"), ("cifar10", "wrn40_2", "wrn40_1"),
                     ("cifar10", "wrn40_2", "wrn16_1"), ("cifar100", "resnet34", "resnet18"),
                     ("cifar100", "wrn40_2", "wrn16_2")}
#: CuDFKD cells with a second launcher for the late-2022 state of their row (§5.8).
CUDFKD_LATE2022 = {("cifar10", "wrn40_2", "wrn16_2"), ("cifar10", "wrn40_2", "wrn16_1"),
                   ("cifar100", "resnet34", "resnet18"), ("cifar100", "vgg11", "resnet18")}

# --------------------------------------------------------------------------- FastDFKD (§10.9), AdaDFKD (§12.7), NAYER (§11.9)
_FAST = {"cifar10": {"fast2": [92.62, 84.67, 89.56, 89.68, 88.36], "fast5": [93.63, 89.94, 92.04, 91.96, 88.90],
                     "fast10": [94.05, 90.53, 92.51, 92.45, 89.29]},
         "cifar100": {"fast2": [69.76, 62.83, 53.15, 57.08, 41.77], "fast5": [72.82, 65.28, 61.80, 63.83, 52.90],
                      "fast10": [74.34, 67.44, 63.91, 65.12, 54.02]}}
_ADADFKD = {"cifar10": [95.32, 92.19, 93.38, 93.15, 90.05], "cifar100": [77.13, 71.52, 68.19, 67.54]}
#: AdaDFKD cells and the script state their launcher runs (§12.6); absent cells copy a row.
ADADFKD_SCRIPTS = {("cifar10", "resnet34", "resnet18"): "HEAD script cifar10_resnet34_resnet18",
                   ("cifar10", "wrn40_2", "wrn16_2"): "HEAD script cifar10_wrn402_wrn161 (runs wrn40_2->wrn16_2)",
                   ("cifar10", "vgg11", "resnet18"): "script state cbcaeb8 of cifar10_resnet34_resnet18 (ran vgg11)",
                   ("cifar100", "vgg11", "resnet18"): "HEAD script cifar100_resnet34_resnet18 (runs vgg11->resnet18)",
                   ("cifar100", "wrn40_2", "wrn16_2"): "HEAD script cifar100_wrn402_wrn162",
                   ("cifar100", "wrn40_2", "wrn40_1"): "script state 93c00de of cifar100_wrn402_wrn401_copy1"}
_NAYER_FIGURE = {"nayer100": 70.2, "nayer200": 71.2, "nayer300": 71.7}


def _cudfkd_paper_entries() -> dict[tuple[str, str, str, str, str], Published]:
    entries = {}
    for dataset, table in (("cifar10", _C10), ("cifar100", _C100)):
        pairs = PAIRS[dataset][:len(next(iter(table.values())))]
        for method, values in table.items():
            for (teacher, student), value in zip(pairs, values):
                cell = (dataset, teacher, student)
                note = _NOTES.get((method, *cell), "")
                if method != "cudfkd":
                    kind, expectation = "re-run", None
                    if (method, *cell) == ("cmi", "cifar10", "wrn40_2", "wrn16_1"):
                        kind, expectation = "different expectation", 88.82
                        note = "90.01 is adversarial CMI; the CMI README expects ~88.82 for the scratch script"
                    entries[(method, "", *cell)] = Published(value, kind, CUDFKD_SOURCE, note, expectation)
                    continue
                kind = "reproduction" if cell in CUDFKD_REPRODUCED else "config not published"
                entries[(method, "", *cell)] = Published(value, kind, CUDFKD_SOURCE, note)
                if cell in CUDFKD_LATE2022:
                    entries[(method, "late2022", *cell)] = Published(value, "alternative state", CUDFKD_SOURCE,
                                                                     "late-2022 script values (§5.8)")
    return entries


def _other_entries() -> dict[tuple[str, str, str, str, str], Published]:
    entries = {}
    for dataset, variants in _FAST.items():
        for variant, values in variants.items():
            for (teacher, student), value in zip(PAIRS[dataset], values):
                entries[("fast", variant, dataset, teacher, student)] = Published(
                    value, "reproduction", "Fast-Datafree README (§10.9)",
                    "the code state behind the paper is unknown (§13 item 3)")
    for dataset, values in _ADADFKD.items():
        for (teacher, student), value in zip(PAIRS[dataset], values):
            cell = (dataset, teacher, student)
            script = ADADFKD_SCRIPTS.get(cell)
            kind = "reproduction" if script else "config not published"
            entries[("adadfkd", "", *cell)] = Published(value, kind, "ljrprocc/DFKD README @cd281c4 (§12.7)",
                                                        script or "")
    for variant, value in _NAYER_FIGURE.items():
        entries[("nayer", variant, "cifar100", "wrn40_2", "wrn16_2")] = Published(
            value, "read off a figure", "NAYER README figure (§11.9)", "approximate")
    return entries


# --------------------------------------------------------------------------- MNIST (§20.1, §20.2)
#: DAFL's MNIST cells (Table 1 of the DAFL README): (teacher, student) -> DAFL's published top-1.
MNIST_PAIRS: list[tuple[str, str]] = [("lenet5", "lenet5_half"), ("hintonnet", "hintonnet_half")]
_DAFL_MNIST = {("lenet5", "lenet5_half"): 98.20, ("hintonnet", "hintonnet_half"): 97.91}
DAFL_MNIST_SOURCE = "DAFL README Table 1 (huawei-noah/Efficient-Computing, §20.1)"
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


def _mnist_entries() -> dict[tuple[str, str, str, str, str], Published]:
    lenet = Published(_DAFL_MNIST[("lenet5", "lenet5_half")], "reproduction", DAFL_MNIST_SOURCE,
                      "the launcher runs the values of DAFL's own MNIST code (§20.1)")
    hinton = Published(_DAFL_MNIST[("hintonnet", "hintonnet_half")], "config not published", DAFL_MNIST_SOURCE,
                       "DAFL's code has LeNet-5 only; the launcher copies the LeNet-5 row (§20.1)")
    return {("dafl", "", "mnist", "lenet5", "lenet5_half"): lenet,
            ("dafl", "", "mnist", "hintonnet", "hintonnet_half"): hinton}


PUBLISHED: dict[tuple[str, str, str, str, str], Published] = {**_cudfkd_paper_entries(), **_other_entries(),
                                                               **_mnist_entries()}


def published(method: str, variant: str, dataset: str, teacher: str, student: str) -> Published | None:
    """The published number of a (method, variant, dataset, teacher, student) cell, or None."""
    return PUBLISHED.get((method, variant, dataset, teacher, student))


def other_rows(dataset: str, teacher: str, student: str) -> list[tuple[str, float]]:
    """The other rows a paper's table gives for this pair (MNIST: DAFL Table 1, §20.1), else []."""
    return list(DAFL_TABLE_ROWS.get((teacher, student), [])) if dataset == "mnist" else []


def scratch_accuracy(model: str, dataset: str) -> float | None:
    """Reported top-1 of ``model`` trained with data on ``dataset`` (§2.2; MNIST §20.1), or None."""
    if dataset == "mnist":
        return SCRATCH_MNIST[model][1] if model in SCRATCH_MNIST else None
    if model not in SCRATCH:
        return None
    _, cifar10, cifar100 = SCRATCH[model]
    return {"cifar10": cifar10, "cifar100": cifar100}.get(dataset)
