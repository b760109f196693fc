"""datafree_kd.py end to end on CPU: every method, data-free by construction, resumption."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

import datafree_kd
import registry
from conftest import distill_args
from datafree import data as data_module
from datafree.errors import CheckpointError

METHODS = sorted(registry.METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_an_epoch_end_to_end(method, tmp_path, cifar10_root, teacher_checkpoint):
    run = tmp_path / method
    result = datafree_kd.main(distill_args(method, cifar10_root, teacher_checkpoint, run, "--log_fidelity"))
    assert result["stopped"] is False and result["epochs"] == 1
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["method"] == method and config["batch_size"] == 16 and config["kd_steps"] == 2
    assert config["precision"] == "fp32" and len(config["teacher_sha256"]) == 64
    assert config["T"] == registry.METHODS[method].Options.resolve().T
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("acc1", "acc5", "loss", "lr", "best_acc1", "epoch_seconds", "images_per_second",
                "loss_student", "agreement1", "prob_loyalty_ref", "prob_loyalty_js"):
        assert key in record, key
    assert record["lr"] == pytest.approx(registry.METHODS[method].Options.resolve().lr)
    assert any(key.startswith("loss_") and key != "loss_student" for key in record)
    assert (run / "best.pth").is_file() and (run / "last.pth").is_file() and (run / "summary.json").is_file()


def test_method_defaults_fill_unset_flags(tmp_path, cifar10_root, teacher_checkpoint):
    parser = datafree_kd.build_parser()
    for method, cls in registry.METHODS.items():
        args = parser.parse_args(["--method", method, "--teacher", "wrn40_2", "--student", "wrn16_1"])
        options = datafree_kd.resolve_options(args)
        published = cls.Options.published("cifar10")
        expected_bs = published["synthesis_batch_size"] or options["batch_size"]   # = B unless published
        assert options["synthesis_batch_size"] == expected_bs
        for key, value in published.items():
            if value is not None:
                assert options[key] == value, (method, key)
        assert options["precision"] == "fp32"   # the reference numerics (§7 item 22)
    cudfkd = datafree_kd.resolve_options(parser.parse_args(
        ["--method", "cudfkd", "--teacher", "wrn40_2", "--student", "wrn16_1", "--dataset", "cifar100",
         "--lmda_ent", "-5"]))
    assert cudfkd["lambda_0"] == 1.0 and cudfkd["lambda_growth"] == 2e-5 and cudfkd["balance"] == 5.0
    # CIFAR-100 without a launcher takes CIFAR-100's main row (the paper-era resnet34 script, §5.8),
    # not CIFAR-10 values mixed with CIFAR-100 pace defaults.
    main_row = {"batch_size": 768, "epochs": 300, "loss": "l1", "T": 5.0, "adv": 0.0, "grad_adv": 0.35,
                "begin_fraction": 0.2, "end_fraction": 0.8}
    assert {key: cudfkd[key] for key in main_row} == main_row
    assert datafree_kd.resolve_options(parser.parse_args(
        ["--method", "dafl", "--teacher", "wrn40_2", "--student", "wrn16_1"]))["T"] == 1.0


def test_distillation_never_reads_the_training_split(tmp_path, cifar10_root, teacher_checkpoint, monkeypatch):
    test_only = tmp_path / "test_only"
    shutil.copytree(cifar10_root, test_only)
    for batch in (test_only / "cifar-10-batches-py").glob("data_batch_*"):
        batch.unlink()
    splits = []
    original = data_module.load_split

    def spy(root, dataset, split, **keywords):
        splits.append(split)
        return original(root, dataset, split, **keywords)

    monkeypatch.setattr(datafree_kd, "load_split", spy)
    datafree_kd.main(distill_args("dafl", test_only, teacher_checkpoint, tmp_path / "run"))
    assert splits == ["test"]


def last_state(run):
    return torch.load(run / "last.pth", weights_only=False)


@pytest.mark.parametrize("method", sorted(registry.METHODS))
def test_resume_equals_uninterrupted(method, tmp_path, cifar10_root, teacher_checkpoint):
    extra = ["--epochs", "2", "--ep_steps", "4", "--kd_steps", "2"]
    full = tmp_path / "full"
    datafree_kd.main(distill_args(method, cifar10_root, teacher_checkpoint, full, *extra))
    pieces = tmp_path / "pieces"
    stopped = datafree_kd.main(distill_args(method, cifar10_root, teacher_checkpoint, pieces, *extra,
                                            "--max_minutes", "1e-9"))
    assert stopped["stopped"] and stopped["position"] == {"epoch": 0, "round": 0, "kd_in_round": 1, "kd_step": 1}
    stopped = datafree_kd.main(distill_args(method, cifar10_root, teacher_checkpoint, pieces, *extra,
                                            "--max_minutes", "1e-9", "--resume"))
    assert stopped["position"]["kd_step"] == 2
    datafree_kd.main(distill_args(method, cifar10_root, teacher_checkpoint, pieces, *extra, "--resume"))
    expected, resumed = last_state(full), last_state(pieces)
    for key, value in expected["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    read = lambda run: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["acc1"] for r in read(full)] == [r["acc1"] for r in read(pieces)]
    assert [r["loss_student"] for r in read(full)] == pytest.approx([r["loss_student"] for r in read(pieces)])


def test_resuming_a_checkpoint_of_another_version_fails_in_one_line(tmp_path, cifar10_root, teacher_checkpoint):
    """A last.pth whose synthesizer state lacks an entry this version writes (here: an earlier
    single-stream RNG state) is refused with the fix, not with a KeyError traceback."""
    run = tmp_path / "run"
    datafree_kd.main(distill_args("dafl", cifar10_root, teacher_checkpoint, run, "--max_minutes", "1e-9"))
    checkpoint = last_state(run)
    checkpoint["synthesizer"]["generator"] = checkpoint["synthesizer"].pop("noise_stream")
    torch.save(checkpoint, run / "last.pth")
    with pytest.raises(CheckpointError, match=r"lacks the entry 'noise_stream'.*--overwrite"):
        datafree_kd.main(distill_args("dafl", cifar10_root, teacher_checkpoint, run, "--resume"))


def test_deterministic_flag_runs_and_repeats_bit_for_bit(tmp_path, cifar10_root, teacher_checkpoint):
    """--deterministic turns on torch.use_deterministic_algorithms; CMI (pool and bank indexing,
    whose backward is the usual CUDA culprit) runs under it without a warning and repeats."""
    method = "cmi"
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*determinis.*")
            runs = [datafree_kd.main(distill_args(method, cifar10_root, teacher_checkpoint, tmp_path / name,
                                                  "--deterministic")) for name in ("a", "b")]
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    first, second = (last_state(tmp_path / name) for name in ("a", "b"))
    assert runs[0]["best_acc1"] == runs[1]["best_acc1"]
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key

