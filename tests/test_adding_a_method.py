"""docs/ARCHITECTURE.md, "Adding a method", worked through once with a small example method.

``GaussianNoiseSynthesizer`` distils on Gaussian-noise images (the "random noise" lower bound of
data-free KD): one file's worth of code (the class, its options, its recipe, its test preset),
registered only while these tests run (the registry line of step 2). It is then exercised exactly
as the registry-parametrised suites exercise every method, gets its launcher from
``scripts/make_launchers.py`` and its row, with its published number, in the report, without an
edit to any other file.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import datafree_kd
import registry
from conftest import distill_args
from datafree.run.cli import run_cli
from datafree.options import option
from datafree.published import Published
from datafree.report.cli import main as report_main
from datafree.synthesis.base import Synthesizer, TestPreset
from datafree.synthesis.recipe import Launcher, Recipe, settings

REPO = Path(__file__).resolve().parents[1]

#: The example's recipe: one launcher, and the number each cell is compared with (chance on 10 classes).
RECIPE = Recipe(
    label="Noise", name="Gaussian-noise lower bound", section="§3.4", table_row=100,
    launchers=(Launcher("cifar10", "wrn40_2", "wrn16_1", what="the lower bound of any data-free method",
                        source="this example", settings=settings(("batch_size", "256", "as the baselines, §4.7"),
                                                                 ("noise_std", "1", "unit Gaussian pixels"))),),
    published={("", "cifar10", cell_teacher, "wrn16_1"): Published(10.0, "reproduction", "chance on 10 classes")
               for cell_teacher in ("wrn40_2", "wrn16_1")})


class GaussianNoiseSynthesizer(Synthesizer):
    """Example: KD on N(0, noise_std²) images, nothing synthesised (a lower bound)."""

    recipe = RECIPE
    #: No learning check: noise teaches nothing; the suites' tiny runs need no extra flag.
    TEST_PRESET = TestPreset(learning_bar=0.0, persistent_synthesis=False)

    @dataclass(frozen=True)
    class Options(Synthesizer.Options):
        """Gaussian-noise options"""

        DEFAULTS = {"batch_size": 16, "epochs": 2, "ep_steps": 4, "kd_steps": 2, "T": 4.0}

        noise_std: float = option(1.0, "std of the noise images", "positive")

    def __init__(self, setup, options: Options) -> None:
        super().__init__(setup, options)
        self.noise_std = options.noise_std

    def synthesize(self) -> dict[str, torch.Tensor]:
        return {}

    def sample(self) -> torch.Tensor:
        size = self.setup.image_size
        return self.noise_std * self.randn(self.setup.batch_size, 3, size, size)


@pytest.fixture
def example_method(monkeypatch):
    monkeypatch.setitem(registry.METHODS, "noise", GaussianNoiseSynthesizer)   # step 2: the registry line


def test_the_example_method_runs_end_to_end_and_resumes_exactly(example_method, tmp_path, cifar10_root,
                                                                teacher_checkpoint):
    full = tmp_path / "full"
    result = datafree_kd.main(distill_args("noise", cifar10_root, teacher_checkpoint, full, "--epochs", "2"))
    assert result["epochs"] == 2 and result["method"] == "noise"
    record = json.loads((full / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["loss_student"] > 0 and 0 <= record["acc1"] <= 100
    pieces = tmp_path / "pieces"
    stopped = datafree_kd.main(distill_args("noise", cifar10_root, teacher_checkpoint, pieces, "--epochs", "2",
                                            "--max_minutes", "1e-9"))
    assert stopped["stopped"]
    datafree_kd.main(distill_args("noise", cifar10_root, teacher_checkpoint, pieces, "--epochs", "2", "--resume"))
    expected = torch.load(full / "last.pth", weights_only=True)["state_dict"]
    resumed = torch.load(pieces / "last.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(value, resumed[key]) for key, value in expected.items())


def test_the_example_methods_flags_resolve_and_validate(example_method, tmp_path, cifar10_root, teacher_checkpoint,
                                                        capsys):
    options = datafree_kd.resolve_options(datafree_kd.build_parser().parse_args(
        ["--method", "noise", "--teacher", "wrn16_1", "--student", "wrn16_1"]))
    assert options["noise_std"] == 1.0 and options["T"] == 4.0 and options["warmup"] == 0
    with pytest.raises(SystemExit) as stopped:
        run_cli(datafree_kd.main, distill_args("noise", cifar10_root, teacher_checkpoint, tmp_path / "run",
                                               "--noise_std", "-1"))
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: --noise_std must be positive, got -1.0\n"
    assert not (tmp_path / "run").exists()


def test_the_example_method_gets_a_launcher_from_its_recipe(example_method, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_launchers", REPO / "scripts" / "make_launchers.py")
    make_launchers = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_launchers", make_launchers)
    spec.loader.exec_module(make_launchers)
    scripts = {script.path: script.text for script in make_launchers.all_scripts()}
    text = scripts["noise/noise_cifar10_wrn40_2_wrn16_1.sh"]
    assert text.startswith("#!/usr/bin/env bash\n# Noise (Gaussian-noise lower bound, docs/METHODS.md §3.4)")
    assert "Reported top-1 (best epoch, chance on 10 classes): 10.00 (reproduction)." in " ".join(text.split("\n# "))
    assert re.search(r"\n    --noise_std 1 +# unit Gaussian pixels\n", text)
    assert "python datafree_kd.py --method noise --dataset cifar10 --teacher wrn40_2 --student wrn16_1" in text
    assert "noise" in make_launchers.managed_dirs()


def test_the_example_method_appears_in_the_report_with_its_published_number(example_method, tmp_path, cifar10_root,
                                                                             teacher_checkpoint, capsys):
    run = tmp_path / "noise"
    datafree_kd.main(distill_args("noise", cifar10_root, teacher_checkpoint, run))
    capsys.readouterr()
    assert report_main([str(run), "--out", str(tmp_path / "report"), "--burn_in", "0"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| noise")]
    assert table and all("10.00" in line for line in table), table
