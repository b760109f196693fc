"""The launchers under scripts/<method>/ (METHODS.md §4.7, §5.8, §7 item 25).

Each launcher is executed by bash with a stub ``python`` first on PATH that records its argument
list, so the checks see exactly what bash would pass to the real program. Checked: the file name is
built from the flags, the directory is the method, the set of cells is exactly the benchmark grid,
every flag exists (verbatim) in the real parser and parses, ``bash -n`` accepts the file, and
``scripts/make_launchers.py --check`` finds the committed files up to date.
"""
from __future__ import annotations

import importlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
NOT_LAUNCHERS = {SCRIPTS / "quickstart.sh", SCRIPTS / "make_launchers.py"}

BASELINES = ("dafl", "zskt", "dfq", "adi", "cmi")
DATA_FREE = (*BASELINES, "cudfkd", "fast", "nayer", "adadfkd", "dfad", "mbdfkd", "predfkd")
CELLS = {
    ("cifar10", "resnet34", "resnet18"), ("cifar10", "vgg11", "resnet18"), ("cifar10", "wrn40_2", "wrn40_1"),
    ("cifar10", "wrn40_2", "wrn16_2"), ("cifar10", "wrn40_2", "wrn16_1"),
    ("cifar100", "resnet34", "resnet18"), ("cifar100", "vgg11", "resnet18"), ("cifar100", "wrn40_2", "wrn40_1"),
    ("cifar100", "wrn40_2", "wrn16_2"),
}
ALL_CELLS = CELLS | {("cifar100", "wrn40_2", "wrn16_1")}   # Fast and NAYER report the fifth CIFAR-100 pair too
#: method -> the set of (dataset, teacher, student, variant) its launchers cover (§5.8, §10.8, §11.8, §12.6).
EXPECTED = {
    **{method: {(*cell, "") for cell in CELLS} for method in (*BASELINES, "adadfkd")},
    "cudfkd": {(*cell, "") for cell in CELLS} | {(*cell, "late2022") for cell in (
        ("cifar10", "wrn40_2", "wrn16_2"), ("cifar10", "wrn40_2", "wrn16_1"), ("cifar100", "resnet34", "resnet18"),
        ("cifar100", "vgg11", "resnet18"))},
    "fast": {(*cell, variant) for cell in ALL_CELLS for variant in ("fast2", "fast5", "fast10")},
    "nayer": {(*cell, variant) for cell in ALL_CELLS for variant in ("nayer100", "nayer200", "nayer300")},
}
# DAFL's MNIST cells (§20.1); DFAD: the paper's grid and its own MNIST run (§14.6, §20.2).
EXPECTED["dafl"] |= {("mnist", "lenet5", "lenet5_half", ""), ("mnist", "hintonnet", "hintonnet_half", "")}
EXPECTED["dfad"] = ({(*cell, "") for cell in CELLS} | {("mnist", "lenet5", "lenet5_half", "")}
                    | {("cifar10", "wrn40_2", "wrn16_1", "bench")})
EXPECTED["predfkd"] = EXPECTED["mbdfkd"] = {(*cell, "") for cell in CELLS}
# ljrprocc's Tiny-ImageNet scripts (§18.5) on its torchvision-layout ResNets; Fast-50 and DeepInversion on ImageNet
# (§19.4).
TINY_R50, TINY_R34 = ("tiny_imagenet", "resnet50_imagenet", "resnet18_imagenet"), \
    ("tiny_imagenet", "resnet34_imagenet", "resnet18_imagenet")
EXPECTED["cudfkd"] |= {(*TINY_R50, ""), (*TINY_R34, "late2022")}
EXPECTED["adadfkd"] |= {(*TINY_R50, "")}
EXPECTED["dfq"] |= {(*TINY_R50, "")}
EXPECTED["cmi"] |= {(*TINY_R34, "")}
EXPECTED["fast"] |= {("imagenet", "tv_resnet50", student, "fast50")
                     for student in ("tv_resnet50", "tv_resnet18", "tv_mobilenet_v2")}
EXPECTED["adi"] |= {("imagenet", "tv_resnet50", "tv_resnet50", "deepinv2k")}
SCRATCH_MODELS = ("resnet34", "vgg11", "wrn40_2", "resnet18", "wrn16_1", "wrn40_1", "wrn16_2")
MNIST_SCRATCH_MODELS = ("lenet5", "lenet5_half", "hintonnet", "hintonnet_half")
TINY_SCRATCH_MODELS = ("resnet50_imagenet", "resnet34_imagenet", "resnet18_imagenet")   # §18.3; none for ImageNet
PROGRAM = {"scratch": "train_scratch.py", **{method: "datafree_kd.py" for method in DATA_FREE}}
PASSTHROUGH = ["--max_minutes", "0.5"]  # stands for the user's "$@"


def launcher_files() -> list[Path]:
    return sorted(p for p in SCRIPTS.glob("*/*") if p.is_file() and p not in NOT_LAUNCHERS)


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict[Path, list[str]]:
    """Each launcher -> the argument list it hands to ``python`` (without the pass-through flags)."""
    stub_dir = tmp_path_factory.mktemp("stub")
    stub = stub_dir / "python"
    stub.write_text('#!/bin/sh\nprintf "%s\\0" "$@" >> "$LAUNCHER_ARGV"\nprintf "\\1\\0" >> "$LAUNCHER_ARGV"\n')
    stub.chmod(0o755)
    result = {}
    for index, path in enumerate(launcher_files()):
        record = stub_dir / f"argv{index}"
        env = {**os.environ, "PATH": f"{stub_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               "LAUNCHER_ARGV": str(record)}
        run = subprocess.run(["bash", str(path), *PASSTHROUGH], env=env, capture_output=True, text=True,
                             timeout=30)
        assert run.returncode == 0, f"{path}: {run.stderr}"
        calls = record.read_text().split("\1\0")
        assert calls[-1] == "" and len(calls) == 2, f"{path} must call python exactly once"
        argv = calls[0].split("\0")[:-1]
        assert argv[-len(PASSTHROUGH):] == PASSTHROUGH, f"{path} does not end with \"$@\""
        result[path] = argv[:-len(PASSTHROUGH)]
    return result


def flag_values(argv: list[str]) -> dict[str, str]:
    """``--flag value`` pairs of a launcher's argument list (every launcher flag takes a value)."""
    values: dict[str, str] = {}
    tokens = argv[1:]
    assert len(tokens) % 2 == 0, f"expected --flag value pairs: {tokens}"
    for flag, value in zip(tokens[::2], tokens[1::2]):
        assert flag.startswith("--") and not value.startswith("--"), (flag, value)
        assert flag[2:] not in values, f"{flag} given twice"
        values[flag[2:]] = value
    return values


def test_launchers_exist_and_are_executable():
    files = launcher_files()
    assert files, "no launchers under scripts/*/"
    for path in files:
        assert path.suffix == ".sh", f"unexpected file {path}"
        assert path.stat().st_mode & stat.S_IXUSR, f"{path} is not executable"
        text = path.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), path
        assert "\nset -euo pipefail\n" in text, path
        assert '\ncd "$(dirname "$0")/../.."\n' in text, path
        assert "Reported" in text, f"{path}: header lacks the reported accuracy"


def test_bash_syntax():
    files = launcher_files()
    for path in files:
        run = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert run.returncode == 0, f"{path}: {run.stderr}"


def test_names_match_flags(launched):
    for path, argv in launched.items():
        method = path.parent.name
        assert method in PROGRAM, f"unexpected directory {path.parent}"
        assert argv[0] == PROGRAM[method], f"{path} runs {argv[0]}"
        values = flag_values(argv)
        if method == "scratch":
            expected = f"scratch_{values['dataset']}_{values['model']}.sh"
        else:
            assert argv[1:9:2] == ["--method", "--dataset", "--teacher", "--student"], path
            assert values["method"] == method, f"{path} runs --method {values['method']}"
            variant = f"_{values['log_tag']}" if "log_tag" in values else ""
            expected = f"{values['method']}_{values['dataset']}_{values['teacher']}_{values['student']}{variant}.sh"
        assert path.name == expected, f"{path.name} runs {expected}"


def test_exact_set_of_launchers(launched):
    cells: dict[str, set[tuple[str, ...]]] = {}
    for path, argv in launched.items():
        values = flag_values(argv)
        method = path.parent.name
        if method == "scratch":
            cells.setdefault(method, set()).add((values["dataset"], values["model"]))
        else:
            cells.setdefault(method, set()).add((values["dataset"], values["teacher"], values["student"],
                                                 values.get("log_tag", "")))
    assert set(cells) == {"scratch", *DATA_FREE}
    for method in DATA_FREE:
        assert cells[method] == EXPECTED[method], method
    assert cells["scratch"] == ({(d, m) for d in ("cifar10", "cifar100") for m in SCRATCH_MODELS}
                                | {("mnist", m) for m in MNIST_SCRATCH_MODELS}
                                | {("tiny_imagenet", m) for m in TINY_SCRATCH_MODELS})


def _import_or_skip(name: str):
    """Import a project module; skip only while it cannot be imported yet (files still being written)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        return importlib.import_module(name)
    except ImportError as error:
        pytest.skip(f"{name} cannot be imported yet: {error}")


def _check_against_parser(parser, argv: list[str], path: Path):
    known = parser._option_string_actions  # exact option strings (no argparse prefix matching)
    for flag in flag_values(argv):
        assert f"--{flag}" in known, f"{path}: --{flag} is not a flag of {argv[0]}"
    _, unknown = parser.parse_known_args(argv[1:])
    assert not unknown, f"{path}: unknown arguments {unknown}"
    return parser.parse_args(argv[1:] + PASSTHROUGH)


def test_flags_accepted_by_train_scratch(launched):
    train_scratch = _import_or_skip("train_scratch")
    for path, argv in launched.items():
        if argv[0] == "train_scratch.py":
            args = _check_against_parser(train_scratch.build_parser(), argv, path)
            train_scratch.resolve_options(args)


def test_flags_accepted_by_datafree_kd(launched):
    datafree_kd = _import_or_skip("datafree_kd")
    parser = datafree_kd.build_parser()
    for path, argv in launched.items():
        if argv[0] != "datafree_kd.py":
            continue
        args = _check_against_parser(parser, argv, path)
        options = datafree_kd.resolve_options(args)  # the method's own validation accepts the values
        for flag in flag_values(argv):
            action = parser._option_string_actions[f"--{flag}"]
            assert options[action.dest] == getattr(args, action.dest), \
                f"{path}: --{flag} {getattr(args, action.dest)} resolved to {options[action.dest]}"


def test_generator_check_reports_up_to_date():
    run = subprocess.run([sys.executable, str(SCRIPTS / "make_launchers.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_generator_names_no_method():
    """scripts/make_launchers.py only renders recipes: no registered method's name appears in it, so a
    method's launchers change only in its own recipe (datafree/synthesis/recipe.py)."""
    registry = _import_or_skip("registry")
    text = (SCRIPTS / "make_launchers.py").read_text(encoding="utf-8").lower()
    assert [name for name in registry.METHODS if name in text] == []


def test_every_method_has_a_recipe_with_launchers():
    """Every registered method carries its recipe on its class (``recipe = RECIPE``): a label, a
    METHODS.md section, at least one launcher, and published numbers only for its declared variants."""
    registry = _import_or_skip("registry")
    from datafree.synthesis.recipe import Recipe

    rows = []
    for name, method in registry.METHODS.items():
        recipe = method.recipe
        assert isinstance(recipe, Recipe), f"{name} has no recipe"
        assert recipe.label and recipe.name and recipe.section.startswith("§"), name
        assert recipe.launchers, f"{name}'s recipe has no launcher"
        assert {key[0] for key in recipe.published} <= {"", *recipe.variants}, name
        assert all(launcher.settings for launcher in recipe.launchers), name
        rows.append(recipe.table_row)
    assert len(set(rows)) == len(rows), "two recipes claim the same table row"


def test_report_and_published_numbers_read_the_recipes():
    """The report's method order and datafree.published's numbers are the recipes' (§5.9, §5.10)."""
    registry = _import_or_skip("registry")
    from datafree.published import published
    from datafree.report.keys import paper_method_order

    recipes = {name: method.recipe for name, method in registry.METHODS.items()}
    assert list(paper_method_order()) == sorted(recipes, key=lambda name: recipes[name].table_row)
    for name, recipe in recipes.items():
        for (variant, dataset, teacher, student), number in recipe.published.items():
            assert published(name, variant, dataset, teacher, student) is number
