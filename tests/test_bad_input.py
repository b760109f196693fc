"""Every bad input is one line and exit code 2, and leaves nothing behind (docs/METHODS.md §7 item 13).

One table, one line per case: ``(name, program, arguments, expected part of the message)``.
``program`` is ``kd`` (datafree_kd.py with a tiny valid configuration whose ``--save_dir`` is a
fresh path the case must not create), ``scratch`` (train_scratch.py, likewise), ``throughput``
or ``report``. Arguments may name fixture files as ``{name}`` (see ``files``). Every case runs
through the command-line wrapper in this process; :func:`test_the_real_clis_answer_the_same`
runs a sample of them as subprocesses, as a user would.

A user's file placed in a directory that a refused run was pointed at must survive it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import datafree_kd
import registry
import train_scratch
from cifar_fixtures import write_cifar
from conftest import REPO, distill_args
from datafree.digests import file_sha256
from datafree.run import checkpoints
from datafree import report
from datafree.run.cli import run_cli
from datafree.run.directory import RunDirectory

sys.path.insert(0, str(REPO / "benchmarks"))
import throughput  # noqa: E402

KD, SCRATCH = "kd", "scratch"
NAYER = ["--method", "nayer", "--warmup", "0"]
CASES = [
    # names, numbers and sizes
    ("unknown method", KD, ["--method", "dafx"], "unknown method 'dafx'; valid methods: cudfkd, cmi"),
    ("unknown teacher", KD, ["--teacher", "resnet99"], "unknown model 'resnet99'; valid models: resnet18"),
    ("unknown dataset", KD, ["--dataset", "svhn"], "unknown dataset 'svhn'; valid datasets: cifar10, cifar100, mnist"),
    ("abbreviated flag", KD, ["--epoch", "3"], "unrecognized arguments: --epoch 3"),
    ("zero batch", KD, ["--batch_size", "0"], "--batch_size must be positive, got 0"),
    ("negative epochs", KD, ["--epochs", "-1"], "--epochs must be positive"),
    ("kd above ep steps", KD, ["--kd_steps", "8", "--ep_steps", "4"], "exceeds --ep_steps"),
    ("warm-up too long", KD, ["--warmup", "1"], "--warmup (1) must be smaller than --epochs (1)"),
    ("negative lr_g", KD, ["--lr_g", "-1"], "--lr_g must be positive, got -1.0"),
    ("beta1 above 1", KD, ["--beta1", "1.5"], "--beta1 must be in [0, 1), got 1.5"),
    ("negative momentum", KD, ["--momentum", "-1"], "--momentum must be >= 0"),
    ("negative weight decay", KD, ["--weight_decay", "-1"], "--weight_decay must be >= 0"),
    ("negative ngf", KD, ["--ngf", "-4"], "--ngf must be positive, got -4"),
    ("zero nz", KD, ["--nz", "0"], "--nz must be positive, got 0"),
    ("huge seed", KD, ["--seed", str(2**70)], "--seed must be in [0, 9223372036854775807]"),
    ("huge batch", KD, ["--batch_size", str(10**12)], "lower --batch_size"),
    ("negative threads", KD, ["--num_threads", "-1"], "--num_threads must be positive"),
    ("nan lr", KD, ["--lr", "nan"], "--lr must be a finite number, got nan"),
    ("infinite lr", KD, ["--lr", "inf"], "--lr must be a finite number, got inf"),
    ("cmi bank", KD, ["--method", "cmi", "--bank_size", "8"], "bank"),
    # teacher checkpoints
    ("missing teacher", KD, ["--teacher_ckpt", "{missing}"], "teacher checkpoint not found"),
    ("corrupt teacher", KD, ["--teacher_ckpt", "{corrupt}"], "is corrupt or unreadable"),
    ("teacher architecture", KD, ["--teacher", "wrn16_2"], "is a wrn16_1, not a wrn16_2; pass --teacher wrn16_1"),
    ("teacher classes", KD, ["--dataset", "cifar100"], "has 10 classes but 100 are expected"),
    ("teacher without weights", KD, ["--teacher_ckpt", "{state5}"], "holds no usable state_dict"),
    ("teacher as pickled model", KD, ["--teacher_ckpt", "{pickled_model}"], "whole pickled model"),
    ("teacher with a payload", KD, ["--teacher_ckpt", "{payload}"], "refused without being run"),
    ("teacher of an unknown zoo", KD, ["--teacher_ckpt", "{resnet110}"], "'resnet110', an architecture this model"),
    # data
    ("missing data root", KD, ["--data_root", "{nowhere}"], "--download"),
    ("partial dataset", KD, ["--data_root", "{partial}"], "--download"),
    ("empty test split", KD, ["--data_root", "{empty}"], "the test split under"),
    ("tampered cifar pickle", KD, ["--data_root", "{evil_data}"], "refused without being run"),
    # run directories
    ("existing run", KD, ["--save_dir", "{existing}"], "already holds a run; pass --resume"),
    ("foreign files", KD, ["--save_dir", "{foreign}", "--overwrite"], "no .datafree-run marker"),
    ("save dir is a file", KD, ["--save_dir", "{file}"], "is a file, not a directory"),
    ("save dir under a file", KD, ["--save_dir", "{file}/run"], "lies under the file"),
    ("save dir under /proc", KD, ["--save_dir", "/proc/datafree-test/run"], "/proc/datafree-test/run"),
    ("resume nothing", KD, ["--resume"], "does not exist; drop --resume"),
    ("resume other flags", KD, ["--save_dir", "{existing}", "--resume", "--lr", "0.5"], "these flags differ: lr"),
    ("resume old version", KD, ["--save_dir", "{old_version}", "--resume"], "another version of datafree"),
    ("resume without config", KD, ["--save_dir", "{no_config}", "--resume"], "config.yaml is missing"),
    ("overwrite the teacher", KD, ["--save_dir", "{teacher_run}", "--teacher_ckpt", "{teacher_run}/best.pth",
                                   "--overwrite"], "an input of this run"),
    # train_scratch.py
    ("scratch unknown model", SCRATCH, ["--model", "vgg99"], "unknown model 'vgg99'; valid models:"),
    ("scratch milestones", SCRATCH, ["--milestones", "a,b"], "--milestones must be comma-separated integers"),
    ("scratch missing data", SCRATCH, ["--data_root", "{nowhere}"], "--download"),
    ("scratch pretrained dir", SCRATCH, ["--pretrained_path", "{folder}"], "must be a file path"),
    ("scratch nan lr", SCRATCH, ["--lr", "nan"], "--lr must be a finite number"),
    ("scratch abbreviated flag", SCRATCH, ["--epoch", "3"], "unrecognized arguments: --epoch 3"),
    ("scratch tampered cifar", SCRATCH, ["--data_root", "{evil_data}"], "refused without being run"),
    # method options (docs/METHODS.md §10-§12)
    ("fast unknown variant", KD, ["--method", "fast", "--fast_variant", "fast3"],
     "argument --fast_variant: invalid choice: 'fast3'"),
    ("fast unknown meta rule", KD, ["--method", "fast", "--fast_meta", "maml"], "argument --fast_meta: invalid choice"),
    ("fast zero lr_z", KD, ["--method", "fast", "--warmup", "0", "--lr_z", "0"], "--lr_z must be positive, got 0.0"),
    ("fast reset epoch", KD, ["--method", "fast", "--warmup", "0", "--reset_l0_epoch", "-5"],
     "--reset_l0_epoch must be an epoch index >= 0, or -1 for no reset; got -5"),
    ("fast without bn and oh", KD, ["--method", "fast", "--warmup", "0", "--bn", "0", "--oh", "0"],
     "FastDFKD needs --bn or --oh above 0"),
    ("nayer embeddings of another class count", KD, [*NAYER, "--label_embeddings", "{nayer_rows}"],
     "has 7 rows but the dataset has 10 classes"),
    ("nayer embeddings 1-D", KD, [*NAYER, "--label_embeddings", "{nayer_flat}"], "has shape (512,), expected 2-D"),
    ("nayer embeddings pickled", KD, [*NAYER, "--label_embeddings", "{nayer_pickled}"],
     "cannot be read as a tensor saved by torch.save"),
    ("nayer embeddings missing", KD, [*NAYER, "--label_embeddings", "{missing}"], "does not exist"),
    ("nayer embeddings legacy pickle", KD, [*NAYER, "--label_embeddings", "{nayer_legacy}"],
     "(it holds Python objects, not only tensors; read with weights_only=True"),
    ("nayer generator too large", KD, [*NAYER, "--le_hidden", "1000000000000"],
     "out of memory while building the student and the nayer synthesizer"),
    ("mbdfkd bank too large", KD, ["--method", "mbdfkd", "--bank_size", "1000000000000"],
     "memory: image bank 1,000,000,000,000 images x 3x32x32 float16 = 6144 TB cannot fit"),
    ("nayer batch not divisible", KD, [*NAYER, "--synthesis_batch_size", "15"],
     "--synthesis_batch_size (15) must be a multiple of the class count (10)"),
    ("adadfkd zero tau", KD, ["--method", "adadfkd", "--tau", "0"], "--tau must be positive, got 0.0"),
    ("adadfkd window too long", KD, ["--method", "adadfkd", "--length", "1.5"], "--length must be in (0, 1], got 1.5"),
    ("adadfkd empty window", KD, ["--method", "adadfkd", "--length", "0"], "--length must be in (0, 1], got 0.0"),
    ("adadfkd empty queue", KD, ["--method", "adadfkd", "--queue_size", "0"], "--queue_size must be positive, got 0"),
    ("adadfkd negative hard", KD, ["--method", "adadfkd", "--hard", "-1"], "--hard must be >= 0, got -1.0"),
    ("adadfkd negative s_nce", KD, ["--method", "adadfkd", "--s_nce", "-0.1"], "--s_nce must be >= 0, got -0.1"),
    # benchmarks/throughput.py and the report
    ("throughput zero kd steps", "throughput", ["--kd_steps_measured", "0"], "--kd_steps_measured must be at least 1"),
    ("throughput zero calls", "throughput", ["--synthesis_calls", "0"], "--synthesis_calls must be at least 1"),
    ("throughput malformed json", "throughput", ["--out", "{malformed}"], "is not a results file"),
    ("throughput out under /proc", "throughput", ["--out", "/proc/datafree-test/table.md"], "cannot write"),
    ("throughput row flag", "throughput", ["--student", "resnet18"], "--student is set for each row"),
    ("throughput unknown flag", "throughput", ["--bogus", "1"], "unrecognized arguments: --bogus"),
    ("report missing run", "report", ["{nowhere}"], "no such run directory"),
    ("report tail_drop not a number", "report", ["{nowhere}", "--tail_drop", "abc"],
     "--tail_drop must be a non-negative integer, got 'abc'"),
    ("report negative burn_in", "report", ["{nowhere}", "--burn_in", "-3"],
     "--burn_in must be a non-negative integer, got '-3'"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory, cifar10_root, teacher_checkpoint) -> dict[str, Path]:
    """The fixture files the cases name as ``{name}``."""
    work = tmp_path_factory.mktemp("bad_input_files")
    paths = {name: work / name for name in ("missing", "nowhere", "corrupt", "state5", "pickled_model", "payload",
                                            "resnet110", "file", "folder", "malformed")}
    paths["corrupt"].write_bytes(b"\x00garbage")
    torch.save({"state_dict": 5}, paths["state5"])
    torch.save(registry.get_model("wrn16_1", 10), paths["pickled_model"])
    torch.save({"state_dict": Payload(work / "sentinel")}, paths["payload"])
    torch.save({"arch": "resnet110", "state_dict": {"weight": torch.zeros(1)}}, paths["resnet110"])
    paths["file"].write_text("a file")
    paths["folder"].mkdir()
    paths["malformed"].with_name("malformed.json").write_text("{not json")
    for name, content in (("nayer_rows", torch.randn(7, 512)), ("nayer_flat", torch.randn(512)),
                          ("nayer_pickled", {"embeddings": Payload(work / "sentinel")})):
        paths[name] = work / f"{name}.pt"
        torch.save(content, paths[name])
    paths["nayer_legacy"] = work / "nayer_legacy.pt"   # a plain pickle (protocol 4), as torch.save never writes
    with open(paths["nayer_legacy"], "wb") as handle:
        import pickle
        pickle.dump(np.zeros((10, 4), np.float32), handle, protocol=4)
    paths["partial"] = work / "partial"
    (paths["partial"] / "cifar-10-batches-py").mkdir(parents=True)
    paths["empty"] = write_cifar(work / "empty", "cifar10", n_train=10, n_test=0)
    paths["evil_data"] = write_cifar(work / "evil_data", "cifar10", n_train=10, n_test=10)
    with open(paths["evil_data"] / "cifar-10-batches-py" / "test_batch", "wb") as handle:
        import pickle
        pickle.dump({"data": Payload(work / "sentinel")}, handle, protocol=2)
    for name, kind in (("existing", "distillation_run"), ("old_version", "distillation_run"),
                       ("no_config", "distillation_run"), ("teacher_run", "scratch_run")):
        paths[name] = fake_run(work / name, kind, distill_args("dafl", cifar10_root, teacher_checkpoint, work / name))
    checkpoints.atomic_save({"format": 1}, paths["old_version"] / "last.pth")
    (paths["no_config"] / "config.yaml").unlink()
    checkpoints.atomic_save(torch.load(teacher_checkpoint, weights_only=True), paths["teacher_run"] / "best.pth")
    paths["foreign"] = work / "foreign"
    paths["foreign"].mkdir()
    (paths["foreign"] / "config.yaml").write_text("not written by datafree\n")
    return paths


class Payload:
    """Pickles into a call of ``os.system``: loading it must never run it."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def fake_run(path: Path, kind: str, kd_args: list[str]) -> Path:
    """A run directory as datafree_kd.py leaves it after its first checkpoint, with a user's file."""
    directory = RunDirectory(path, kind)
    directory.open("new")
    options = datafree_kd.resolve_options(datafree_kd.build_parser().parse_args(kd_args))
    directory.write_config({**options, "teacher_sha256": file_sha256(Path(options["teacher_ckpt"]))})
    checkpoints.atomic_save({"format": checkpoints.CHECKPOINT_FORMAT, "kind": kind}, path / "last.pth")
    (path / "user_notes.txt").write_text("mine")
    return path


def command(program: str, arguments: list[str], files: dict[str, Path], save_dir: Path, cifar10_root: Path,
            teacher: Path) -> list[str]:
    """The full argument list of a case, with ``{name}`` replaced by fixture paths."""
    arguments = [argument.format(**{name: str(path) for name, path in files.items()}) for argument in arguments]
    if program == KD:
        return [*distill_args("dafl", cifar10_root, teacher, save_dir), *arguments]
    if program == SCRATCH:
        return ["--model", "wrn16_1", "--data_root", str(cifar10_root), "--save_dir", str(save_dir),
                "--pretrained_path", str(save_dir / "pretrained.pth"), "--device", "cpu", "--no_progress", *arguments]
    if program == "throughput":
        return ["--methods", "dafl", "--pairs", "wrn16_1:wrn16_1", "--device", "cpu", *arguments]
    return arguments


MAINS = {KD: datafree_kd.main, SCRATCH: train_scratch.main, "throughput": throughput.main, "report": report.main}
SCRIPTS = {KD: ["datafree_kd.py"], SCRATCH: ["train_scratch.py"], "throughput": ["benchmarks/throughput.py"],
           "report": ["-m", "datafree.report"]}


def directory_listing(files: dict[str, Path]) -> dict[str, list[str]]:
    return {name: sorted(p.name for p in path.iterdir()) for name, path in files.items() if path.is_dir()}


def check_one_line(code: int, stderr: str, expected: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("note:")]
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


@pytest.mark.parametrize("name, program, arguments, expected", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_exit_code_2_and_leaves_nothing(name, program, arguments, expected, files,
                                                                 tmp_path, cifar10_root, teacher_checkpoint, capsys):
    before = directory_listing(files)
    save_dir = tmp_path / "run"
    argv = command(program, arguments, files, save_dir, cifar10_root, teacher_checkpoint)
    with pytest.raises(SystemExit) as stopped:
        run_cli(MAINS[program], argv)
    check_one_line(stopped.value.code, capsys.readouterr().err, expected)
    assert not save_dir.exists(), f"{name} created {save_dir}"
    assert directory_listing(files) == before, f"{name} changed a directory it was pointed at"
    assert not (files["missing"].parent / "sentinel").exists(), "a file's payload ran"


SUBPROCESS_CASES = ["nan lr", "abbreviated flag", "teacher with a payload", "scratch pretrained dir",
                    "throughput unknown flag", "report missing run", "nayer embeddings legacy pickle",
                    "nayer generator too large"]


def test_the_real_clis_answer_the_same(files, tmp_path, cifar10_root, teacher_checkpoint):
    """A sample of the cases as subprocesses of the real command lines, two at a time."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cases = [case for case in CASES if case[0] in SUBPROCESS_CASES]
    assert len(cases) == len(SUBPROCESS_CASES)
    for start in range(0, len(cases), 2):
        running = []
        for name, program, arguments, expected in cases[start:start + 2]:
            argv = command(program, arguments, files, tmp_path / name.replace(" ", "_"), cifar10_root,
                           teacher_checkpoint)
            process = subprocess.Popen([sys.executable, *SCRIPTS[program], *argv], cwd=REPO, env=env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            running.append((process, expected))
        for process, expected in running:
            _, stderr = process.communicate(timeout=120)
            check_one_line(process.returncode, stderr, expected)
    assert not (files["missing"].parent / "sentinel").exists()
    assert list(tmp_path.iterdir()) == []
