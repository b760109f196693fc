"""docs/ARCHITECTURE.md, "Adding a method", worked through once with a small example method.

``GaussianNoiseSynthesizer`` distils on Gaussian-noise images (the "random noise" lower bound of
data-free KD): one file's worth of code, registered only while these tests run (the registry line
of step 2), and then exercised exactly as the registry-parametrised suites exercise every method.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

import datafree_kd
import registry
from conftest import distill_args
from datafree.cli import run_cli
from datafree.options import option
from datafree.synthesis.base import Synthesizer


class GaussianNoiseSynthesizer(Synthesizer):
    """Example: KD on N(0, noise_std²) images, nothing synthesised (a lower bound)."""

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
