"""Two CPU processes under torchrun (gloo) finish with identical student weights (issue: scale)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO, distill_args


def run_two_ranks(datafree_kd_args: list[str]) -> dict[str, str]:
    """``datafree_kd.py`` under torchrun with two ranks on this machine; checks that it finished
    and returns each rank's student fingerprint (rank -> fingerprint)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "datafree_kd.py", *datafree_kd_args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    fingerprints = dict(re.findall(r"rank (\d) student fingerprint: (\S+)", result.stdout))
    assert set(fingerprints) == {"0", "1"}, result.stdout
    return fingerprints


def test_two_process_ddp_run_keeps_ranks_identical_and_splits_the_global_batch(tmp_path, cifar10_root,
                                                                              teacher_checkpoint):
    run = tmp_path / "ddp"
    fingerprints = run_two_ranks([*distill_args("dfq", cifar10_root, teacher_checkpoint, run),
                                  "--num_threads", "1", "--epochs", "2"])
    assert fingerprints["0"] == fingerprints["1"]
    assert (run / "last.pth").is_file() and (run / "metrics.jsonl").read_text().count("\n") == 2
    import yaml
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["world_size"], config["batch_size"], config["batch_size_per_rank"]) == (2, 16, 8)


def test_a_global_batch_that_does_not_divide_across_ranks_is_one_line(monkeypatch):
    import pytest

    import datafree_kd
    from datafree.errors import UsageError

    monkeypatch.setenv("WORLD_SIZE", "2")
    args = datafree_kd.build_parser().parse_args(["--method", "dafl", "--teacher", "wrn16_1", "--student", "wrn16_1",
                                                  "--batch_size", "15"])
    with pytest.raises(UsageError, match="--batch_size 15 is the global batch and must divide across the 2 ranks"):
        datafree_kd.resolve_options(args)


def test_single_process_checkpoint_resumes_on_two_ranks(tmp_path, cifar10_root, teacher_checkpoint):
    import datafree_kd

    run = tmp_path / "switch"
    args = [*distill_args("cudfkd", cifar10_root, teacher_checkpoint, run), "--epochs", "2", "--ngf", "8"]
    stopped = datafree_kd.main([*args, "--max_minutes", "1e-9"])
    assert stopped["stopped"]
    fingerprints = run_two_ranks([*args, "--num_threads", "1", "--resume"])
    assert fingerprints["0"] == fingerprints["1"]
    assert [line.count('"epoch"') for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 1]
