"""A method's recipe: what its launchers run and what its paper reports, as data beside the method.

Each method module under ``datafree/synthesis/`` defines ``RECIPE`` above its class, and the class
carries it as ``recipe`` (``Synthesizer.recipe``; the class is registered in ``registry.METHODS``).
Three readers share the recipes, so a method's numbers and settings live in one place:

* ``scripts/make_launchers.py`` renders every :class:`Launcher` of every registered recipe as
  ``scripts/<method>/<method>_<dataset>_<teacher>_<student>[_<variant>].sh`` (docs/METHODS.md
  §4.7, §5.8, §10.8, §11.8, §12.6, §20.1);
* :mod:`datafree.published` answers which published number a measured cell is compared with, and
  what kind of comparison it is, from :attr:`Recipe.published` (§5.10);
* the report orders its method rows by :attr:`Recipe.table_row` (the paper's order, §5.9).

Every value a launcher passes is a :class:`Setting` whose comment says where the value comes from:
a published per-pair script, or the method default where no script exists for the cell or the
§4.7 row does not list the value. Values are strings, spelled as the launcher writes them.

Values several recipes share live here: the §4.7 baseline scripts' sources and the builder of a
baseline recipe (:func:`baseline_recipe`), a published table row as cells (:func:`pair_values`,
§5.9), the per-pair script rows of the curriculum methods (:class:`CurriculumRow`, §5.8, §12.6),
the ``--precision`` every launcher passes (§7 item 22), and the with-data recipes of
``train_scratch.py`` per dataset (:data:`SCRATCH_RECIPES`, §2.2, §18.3, §20.1; ImageNet's entry only names
its teachers' source, §19.4), which are not a method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

from datafree.published import (CUDFKD_SOURCE, LARGE_PAIRS, LJRPROCC_TEACHERS, MNIST_PAIRS, PAIRS, PAPER_CELLS, SCRATCH,
                                SCRATCH_LARGE, SCRATCH_MNIST, TORCHVISION_ACCURACY, Published)

#: (dataset, teacher, student): one cell of the benchmark grid.
Cell = tuple[str, str, str]
#: (variant, dataset, teacher, student): what a published number is keyed by; the variant is the
#: ``--log_tag`` of the launcher that runs it ("" for the method's default configuration).
NumberKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class Setting:
    """One ``--flag value`` a launcher passes, and where the value comes from (its comment)."""

    flag: str
    value: str
    comment: str = ""


def settings(*rows: tuple[str, ...]) -> tuple[Setting, ...]:
    """``(flag, value[, comment])`` tuples as :class:`Setting` values, in launcher order."""
    return tuple(Setting(*row) for row in rows)


#: The numerics every launcher asks for (§7 item 22).
PRECISION = Setting("precision", "fp32",
                    "reference numerics: FP32 + TF32 convolutions (§7 item 22); bf16 = fast mode")


@dataclass(frozen=True)
class Launcher:
    """One launcher of a method: a cell (and a variant), the values it passes, and its header's text.

    The header reads, in order: ``<label> (<name>, docs/METHODS.md <sections>): data-free
    distillation of a <student> student from a <teacher> teacher on <dataset>; <what>.``; the
    cell's published number from the recipe, then ``reported_notes``; the teacher's and the
    student's top-1 trained with data (unless ``scratch_line`` is False, where ``reported_notes``
    quote them already); ``Source: <source>.``; ``remarks``; ``Notes:`` with ``notes`` followed by
    the recipe's own notes (unless ``shared_notes`` is False: a launcher outside the grid those
    notes describe, e.g. DAFL's own MNIST configuration, §20.1). ``sections`` replaces the
    recipe's METHODS.md section in the first line when the launcher cites more.
    """

    dataset: str
    teacher: str
    student: str
    what: str
    source: str
    settings: tuple[Setting, ...]
    variant: str = ""
    notes: tuple[str, ...] = ()
    reported_notes: tuple[str, ...] = ()
    remarks: tuple[str, ...] = ()
    sections: str = ""
    shared_notes: bool = True
    scratch_line: bool = True

    @property
    def cell(self) -> Cell:
        return (self.dataset, self.teacher, self.student)


@dataclass(frozen=True)
class Recipe:
    """A data-free method's published recipe: names, launchers and published numbers (§5.10).

    ``label`` is how launchers and tables name the method (e.g. "FastDFKD"), ``name`` what the
    label stands for, ``section`` its docs/METHODS.md section, ``table_row`` its row in the
    paper's tables (§5.9; methods after the paper's follow). ``variants`` are the ``--log_tag``
    values its launchers and published numbers use besides "" (e.g. CuDFKD's "late2022", §5.8).
    ``notes`` end the notes of every launcher. ``published`` maps (variant, dataset, teacher,
    student) to the number that cell is compared with. ``caveat`` qualifies the method wherever it is named
    (``--method``'s help, the report's rows), e.g. "reconstruction" for a method without public code.
    """

    label: str
    name: str
    section: str
    table_row: int
    launchers: tuple[Launcher, ...]
    published: Mapping[NumberKey, Published] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    caveat: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "published", MappingProxyType(dict(self.published)))
        known = {"", *self.variants}
        used = {launcher.variant for launcher in self.launchers} | {key[0] for key in self.published}
        if not used <= known:
            raise ValueError(f"{self.label}: variants {sorted(used - known)} are not declared in its recipe")

    def number(self, variant: str, dataset: str, teacher: str, student: str) -> Published | None:
        """The published number of one (variant, cell), or None."""
        return self.published.get((variant, dataset, teacher, student))


# --------------------------------------------------------------------------- published tables (§5.9)
def pair_values(cifar10: Sequence[float], cifar100: Sequence[float]) -> dict[Cell, float]:
    """A published table's row for one method as cell -> value, the values in the order of ``PAIRS``
    (a shorter row stops early: the CuDFKD paper has no CIFAR-100 wrn40_2→wrn16_1 column, §5.9)."""
    return {(dataset, teacher, student): value for dataset, values in (("cifar10", cifar10), ("cifar100", cifar100))
            for (teacher, student), value in zip(PAIRS[dataset], values)}


def paper_numbers(cifar10: Sequence[float], cifar100: Sequence[float], kind: str = "re-run",
                  notes: Mapping[Cell, str] | None = None) -> dict[NumberKey, Published]:
    """A baseline's row of the paper's tables as published numbers: the baselines' numbers come from
    CMI's unreleased code, so a launcher re-runs the released recipe (kind "re-run", §4.7, §5.10)."""
    notes = notes or {}
    return {("", *cell): Published(value, kind, CUDFKD_SOURCE, notes.get(cell, ""))
            for cell, value in pair_values(cifar10, cifar100).items()}


# --------------------------------------------------------------------------- §4.7 baselines
CMI_SCRIPT = "zju-vipa/CMI script for this pair"
DFKD_SCRIPT = "ljrprocc/DFKD script for this pair"
LJRPROCC_KD_NOTE = ("The ljrprocc/DFKD baseline scripts pass --kd_steps, which their loop ignores (it ran 400 KD "
                    "steps per generator step, §7 item 7); this launcher uses the method's value.")
C100_BASELINE_NOTE = ("CIFAR-100 baseline numbers are uncertain: Fast-Datafree's README reports different "
                      "ones for DAFL/ZSKT/DFQ on the non-ResNet pairs (§5.9).")
#: In a baseline's defaults, the value of ``synthesis_batch_size`` that means "Bs = B" (§4.7).
SAME_AS_BATCH = "=B"


@dataclass(frozen=True)
class BaselineRow:
    """A §4.7 per-pair script row of a baseline: the values it lists (everything else = method default).

    ``listed`` is how §4.7 lists the values (e.g. "B, E"); empty: the script uses the defaults throughout.
    """

    source: str
    values: Mapping[str, str] = field(default_factory=dict)
    listed: str = ""
    notes: tuple[str, ...] = ()


def _baseline_launcher(label: str, cell: Cell, defaults: Sequence[tuple[str, str]], row: BaselineRow | None,
                       no_cifar100: bool, missing_notes: Sequence[str], reported_notes: Sequence[str]) -> Launcher:
    """A baseline's launcher for one cell of the paper's grid: the cell's §4.7 row, or the method defaults."""
    dataset = cell[0]
    if row is None:
        why = ("no published cifar100 script" if dataset == "cifar100" and no_cifar100
               else "no published script for this pair")
        source = f"none ({why}); every value is the {label} method default (§4.7)"
        notes = tuple(missing_notes)
        what = "method defaults"
    else:
        source = f"{row.source} (docs/METHODS.md §4.7)"
        notes = row.notes
        what = "published per-pair setting" + (f" ({row.listed}; the rest are method defaults)" if row.listed else "")
    resolved = dict(defaults)
    listed = dict(row.values) if row is not None else {}
    resolved.update(listed)
    values = []
    for flag, _ in defaults:
        value = resolved[flag]
        if value == SAME_AS_BATCH:
            value = resolved["batch_size"]
        if row is None:
            comment = f"method default ({why})"
        elif flag in listed:
            comment = "per-pair script value"
        elif not row.listed:
            comment = "script value (= method default)"
        else:
            comment = f"method default (§4.7 row lists only {row.listed})"
        if flag == "synthesis_batch_size" and flag not in listed:
            comment = "Bs = B; " + comment
        values.append(Setting(flag, value, comment))
    reported = (*reported_notes, *((C100_BASELINE_NOTE,) if dataset == "cifar100" else ()))
    return Launcher(*cell, what=what, source=source, settings=tuple(values), notes=notes, reported_notes=reported)


def baseline_recipe(*, label: str, name: str, section: str, table_row: int, defaults: Sequence[tuple[str, str]],
                    rows: Mapping[Cell, BaselineRow], notes: Sequence[str], published: Mapping[NumberKey, Published],
                    no_cifar100: bool = False, missing_notes: Mapping[Cell, Sequence[str]] | None = None,
                    reported_notes: Mapping[Cell, Sequence[str]] | None = None,
                    more_launchers: Sequence[Launcher] = (), variants: Sequence[str] = ()) -> Recipe:
    """The recipe of a §4 baseline: one launcher per cell of the paper's grid (§5.9), each running the
    cell's §4.7 script row or, without one, the method ``defaults`` ((flag, value) in launcher order).

    ``no_cifar100``: the method has no CIFAR-100 script at all (§4.7). ``missing_notes``: notes of
    cells without a script; ``reported_notes``: lines after a cell's published number.
    ``more_launchers`` follow the grid's (e.g. DAFL's own MNIST run, §20.1; the Tiny-ImageNet and ImageNet
    cells, §18.5, §19.4), and ``variants`` are the ones they and ``published`` use.
    """
    missing_notes, reported_notes = missing_notes or {}, reported_notes or {}
    launchers = tuple(_baseline_launcher(label, cell, defaults, rows.get(cell), no_cifar100,
                                         missing_notes.get(cell, ()), reported_notes.get(cell, ()))
                      for cell in PAPER_CELLS)
    return Recipe(label=label, name=name, section=section, table_row=table_row,
                  launchers=launchers + tuple(more_launchers), published=published, notes=tuple(notes),
                  variants=tuple(variants))


# --------------------------------------------------------------------------- §5.8 / §12.6 curriculum rows
@dataclass(frozen=True)
class CurriculumRow:
    """A per-pair script row of a curriculum method (CuDFKD §5.8, AdaDFKD §12.6): its values by flag
    (batch_size, epochs, loss, T, lambda_0, adv, grad_adv, begin_fraction, end_fraction, seed, and
    AdaDFKD's length, s_nce, queue_size), whether the script passed ``--memory`` (§5.7) and its notes."""

    label: str
    source: str
    values: Mapping[str, str]
    notes: tuple[str, ...] = ()
    memory: bool = False


#: The pace growth α the reference hard-codes per dataset (§5.4): value and its comment.
PACE_GROWTH: dict[str, tuple[str, str]] = {
    "cifar10": ("1e-4", "§5.4 pace growth hard-coded for cifar10"),
    "cifar100": ("2e-5", "§5.4 pace growth hard-coded for non-cifar10 datasets"),
    "tiny_imagenet": ("2e-5", "§5.4 pace growth hard-coded for non-cifar10 datasets"),
}


def replace_settings(base: Sequence[Setting], *changes: tuple[str, str, str]) -> tuple[Setting, ...]:
    """``base`` with the value and comment of each ``(flag, value, comment)`` in ``changes`` replaced in
    place (e.g. a method's common settings at 64 px: nz 1024 and depth 3, §18.5)."""
    by_flag = {flag: Setting(flag, value, comment) for flag, value, comment in changes}
    unknown = set(by_flag) - {setting.flag for setting in base}
    assert not unknown, f"not in the base settings: {sorted(unknown)}"
    return tuple(by_flag.get(setting.flag, setting) for setting in base)


def adversarial_schedule_note(values: Mapping[str, str]) -> str:
    """Describe adv_weight(epoch) of §5.5 for a row: warm-up at adv, ramp of grad_adv per epoch, plateau."""
    epochs, adv, grad = int(values["epochs"]), float(values["adv"]), float(values["grad_adv"])
    begin = int(epochs * float(values["begin_fraction"]))
    end = int(epochs * float(values["end_fraction"]))
    if grad == 0 or end <= begin + 1:
        return f"Adversarial weight: constant {adv:g} for all {epochs} epochs (grad_adv {grad:g}, §5.5)."
    plateau = adv + (end - begin) * grad
    return (f"Adversarial weight (§5.5, b = {begin}, e = {end}): {adv:g} up to epoch {begin + 1}, then +{grad:g} "
            f"per epoch from epoch {begin + 2} ({adv + grad:g}), plateau {plateau:g} from epoch {end + 1}.")


def curriculum_launcher(cell: Cell, row: CurriculumRow, exact: bool, section: str, order: Sequence[str],
                        common: Sequence[Setting], *, variant: str = "", extra_notes: Sequence[str] = (),
                        reported_notes: Sequence[str] = ()) -> Launcher:
    """The launcher that runs ``row`` for ``cell``: the row's values (``order``, with Bs = B, §5.8,
    §12.6), the dataset's pace growth, the method's ``common`` values, the row's seed last.

    ``exact``: the row is the published script of exactly this cell. Otherwise the cell has no
    published configuration and copies the same-dataset row of the closest teacher family with
    B <= 1024 (the §5.8 rule, which §12.6 follows). ``extra_notes`` come between the provenance
    notes and the adversarial schedule (§5.5).
    """
    batch = row.values["batch_size"]
    assert int(batch) <= 1024, f"{row.label}: B {batch} > 1024"
    if exact:
        what = f"published configuration ({row.label} of {section})"
        source = f"{row.source} (docs/METHODS.md {section})"
        comment = f"published row ({section})"
        notes = row.notes
    else:
        rule = "§5.8" if section == "§5.8" else f"{section}, as §5.8"
        what = f"config not published; copies the {row.label} of {section} (closest teacher family)"
        source = (f"none, config not published for this pair; values copied ({rule} rule for missing pairs) from "
                  f"the {row.label}, whose source is the {row.source}")
        comment = f"config not published: copied from the {row.label}"
        notes = (f"Config not published: {rule} rule - copy the same-dataset row of the closest teacher family, "
                 f"B <= 1024 (here the {row.label}).",)
    growth, growth_comment = PACE_GROWTH[cell[0]]
    values = (Setting("batch_size", batch, comment), Setting("synthesis_batch_size", batch, "Bs = B (§5.8, §12.6)"),
              *(Setting(flag, row.values[flag], comment) for flag in order if flag not in ("batch_size", "seed")),
              Setting("lambda_growth", growth, growth_comment), *common,
              Setting("seed", row.values["seed"], comment))
    return Launcher(*cell, what=what, source=source, settings=values, variant=variant,
                    notes=(*notes, *extra_notes, adversarial_schedule_note(row.values)),
                    reported_notes=tuple(reported_notes))


# --------------------------------------------------------------------------- with-data training (§2.2, §20.1)
@dataclass(frozen=True)
class ScratchModel:
    """One model ``train_scratch.py`` trains with data: its reported top-1, the recipe it follows
    and what the launcher's header says it is for (teacher of, or with-data reference for)."""

    model: str
    accuracy: float
    recipe: str
    relation: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScratchRecipe:
    """How ``train_scratch.py`` trains one dataset's teachers and students with data, and how every
    launcher names the dataset (not a method: rendered beside the methods' recipes).

    ``label`` names the dataset in these launchers, ``distill_label`` in a distillation launcher
    (MNIST runs at 32 px, §20.1); ``defaults`` says which train_scratch.py defaults ``settings``
    are; ``checkpoint_note`` ends the header's line on the copied checkpoint; ``released_teachers``:
    a released teacher can stand in for one trained here (CMI's CIFAR teachers, §2.2; ljrprocc's
    Tiny-ImageNet teachers, §18.4). ``with_data_source`` says, in a distillation launcher's header,
    where the with-data top-1 of teacher and student comes from (default: ``section``);
    ``teacher_file`` replaces the advice on where the teacher comes from (ImageNet: torchvision's
    weight file, no train_scratch.py launcher, §19.4).
    """

    dataset: str
    label: str
    distill_label: str
    section: str
    reported_source: str
    settings: tuple[Setting, ...]
    defaults: str
    usage: str
    models: tuple[ScratchModel, ...]
    checkpoint_note: str = ""
    released_teachers: bool = True
    with_data_source: str = ""
    teacher_file: str = ""


#: The §2.2 reference recipe (all of them are train_scratch.py's defaults; passed for readability).
CIFAR_SCRATCH_SETTINGS = settings(
    ("epochs", "200"), ("batch_size", "256"), ("lr", "0.1"), ("momentum", "0.9"), ("weight_decay", "1e-4"),
    ("milestones", "120,150,180"), ("gamma", "0.1"))
CIFAR_SCRATCH_NOTES: dict[tuple[str, str], tuple[str, ...]] = {
    ("cifar100", "resnet18"): (
        "The CMI README lists 77.01 for resnet18 in its vgg11 column; the other tables say 77.10.",),
}
DAFL_TEACHER = "Data-Efficient-Model-Compression/DAFL teacher-train.py"
#: DAFL's teacher recipe for MNIST (§20.1); HintonNet's is not published and copies it.
MNIST_SCRATCH_SETTINGS = settings(
    ("optimizer", "adam", f"{DAFL_TEACHER}:53"), ("lr", "1e-3", ":53"),
    ("weight_decay", "0", "Adam without weight decay (:53)"),
    ("epochs", "9", "epoch = 10 at :172, but range(1, epoch) at :175 runs 9"),
    ("batch_size", "256", ":48"), ("milestones", "", "no learning-rate schedule"))


def _cifar_scratch(dataset: str, label: str) -> ScratchRecipe:
    models = []
    for model, (role, cifar10, cifar100) in SCRATCH.items():
        used_as = sorted({student if role == "teacher" else teacher for teacher, student in PAIRS[dataset]
                          if model in (teacher, student)})
        relation = (f"teacher of the data-free students {', '.join(used_as)}" if role == "teacher" else
                    f"the with-data reference for {model} students distilled data-free from {', '.join(used_as)}")
        models.append(ScratchModel(model, cifar10 if dataset == "cifar10" else cifar100, "the reference recipe",
                                   relation, CIFAR_SCRATCH_NOTES.get((dataset, model), ())))
    return ScratchRecipe(dataset, label, label, "§2.2", "CMI README, identical in the CuDFKD README, §2.2",
                         CIFAR_SCRATCH_SETTINGS, "defaults", "[--data_root DIR] [--download] [--max_minutes M] ...",
                         tuple(models))


def _mnist_scratch() -> ScratchRecipe:
    models = []
    for model, (role, accuracy) in SCRATCH_MNIST.items():
        teacher, student = next(pair for pair in MNIST_PAIRS if model in pair)
        relation = (f"teacher of the data-free {student} students" if role == "teacher" else
                    f"the with-data reference ('backprop on data') for {model} students distilled from {teacher}")
        recipe = ("DAFL's teacher recipe" if model.startswith("lenet") else
                  "DAFL's LeNet-5 recipe (HintonNet's is not published; inferred)")
        models.append(ScratchModel(model, accuracy, recipe, relation))
    return ScratchRecipe("mnist", "MNIST", "MNIST (32 px)", "§20.1", "DAFL README Table 1, §20.1",
                         MNIST_SCRATCH_SETTINGS, "MNIST defaults", "[--data_root DIR] [--download] [--seed N] ...",
                         tuple(models),
                         checkpoint_note="The reference saved the last epoch; the run's summary records both.",
                         released_teachers=False)


#: ljrprocc's Tiny-ImageNet teacher recipe (§18.3; train_scratch.py's Tiny-ImageNet defaults).
TINY_SCRATCH_SOURCE = "ljrprocc/DFKD scripts/run_scratch_tiny_imagenet.sh"
TINY_SCRATCH_SETTINGS = settings(
    ("epochs", "200", f"{TINY_SCRATCH_SOURCE} (§18.3)"),
    ("batch_size", "128", "the script's total batch over its 2 GPUs, here on one device (§18.3)"),
    ("lr", "0.2", "§18.3 script value"), ("momentum", "0.9", "§18.3"), ("weight_decay", "1e-4", "§18.3 script value"),
    ("milestones", "120,150,180", "§18.3: the reference's default milestones"), ("gamma", "0.1", "§18.3"))


def _tiny_scratch() -> ScratchRecipe:
    """The Tiny-ImageNet teachers and student of ljrprocc's published cells, trained with its recipe (§18.3)."""
    models = []
    for model, (role, accuracy, _) in SCRATCH_LARGE["tiny_imagenet"].items():
        partners = sorted({student if role == "teacher" else teacher for teacher, student in LARGE_PAIRS["tiny_imagenet"]
                           if model in (teacher, student)})
        relation = (f"teacher of the data-free students {', '.join(partners)}" if role == "teacher" else
                    f"the with-data reference for {model} students distilled data-free from {', '.join(partners)}")
        notes = ("The number is that of ljrprocc's released file of the same name (a DDP save that loads as it is, "
                 "§18.4); this launcher trains a new one with the recipe of its ResNet-50.",)
        if model == "resnet18_imagenet":
            notes += ("An older ljrprocc revision trained ResNet-18 with batch 512 at lr 0.1 (§18.3).",)
        models.append(ScratchModel(model, accuracy, "ljrprocc's teacher recipe", relation, notes))
    return ScratchRecipe("tiny_imagenet", "Tiny-ImageNet", "Tiny-ImageNet (64 px)", "§18.3", LJRPROCC_TEACHERS,
                         TINY_SCRATCH_SETTINGS, "Tiny-ImageNet defaults",
                         "[--data_root DIR] [--download] [--max_minutes M] ...", tuple(models),
                         checkpoint_note="Compare students only with the teacher they were distilled from (§18.3).",
                         with_data_source="ljrprocc's released files, §18.4")


def _imagenet_entry() -> ScratchRecipe:
    """ImageNet: no with-data launcher (train_scratch.py refuses it); the teachers are torchvision's weights."""
    return ScratchRecipe("imagenet", "ImageNet", "ImageNet (224 px)", "§19.2", TORCHVISION_ACCURACY, (), "", "", (),
                         released_teachers=False, with_data_source=TORCHVISION_ACCURACY,
                         teacher_file="put torchvision's pretrained weight file of this architecture there: a plain "
                                      "state_dict, never downloaded, see the README's ImageNet section and §19.4; "
                                      "train_scratch.py does not train on ImageNet")


#: dataset -> its with-data recipe (§2.2, §18.3, §19.2, §20.1).
SCRATCH_RECIPES: dict[str, ScratchRecipe] = {
    "cifar10": _cifar_scratch("cifar10", "CIFAR-10"),
    "cifar100": _cifar_scratch("cifar100", "CIFAR-100"),
    "mnist": _mnist_scratch(),
    "tiny_imagenet": _tiny_scratch(),
    "imagenet": _imagenet_entry(),
}
