"""Inputs found by probing the commands as a new user would (one line, exit 2, nothing left behind):
a full disk at the first checkpoint, a moved NAYER embeddings file on --resume, long torch messages."""
from __future__ import annotations

import shutil

import pytest
import torch

import datafree_kd
from conftest import distill_args
from datafree.run.checkpoints import WriteError
from datafree.errors import first_line


def test_a_full_disk_at_the_first_checkpoint_is_one_line_and_leaves_no_run(tmp_path, cifar10_root,
                                                                          teacher_checkpoint, monkeypatch):
    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    run = tmp_path / "runs" / "run"
    with pytest.raises(WriteError) as error:
        datafree_kd.main(distill_args("dafl", cifar10_root, teacher_checkpoint, run))
    message = str(error.value)
    assert "\n" not in message and "no space left on the device" in message and "run the same command again" in message
    assert "--resume" not in message
    assert not run.exists() and (tmp_path / "runs").is_dir()   # only what this run created is removed


def test_a_full_disk_later_keeps_the_run_and_says_resume(tmp_path, cifar10_root, teacher_checkpoint, monkeypatch):
    run = tmp_path / "run"
    saves = []
    real_save = torch.save

    def full_on_second(obj, file, *args, **kwargs):
        saves.append(1)
        if len(saves) > 1:
            raise RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed")
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_on_second)
    with pytest.raises(WriteError, match=r"cannot write .*best.pth .*then run the same command with --resume"):
        datafree_kd.main(distill_args("dafl", cifar10_root, teacher_checkpoint, run))
    assert (run / "last.pth").is_file() and (run / "config.yaml").is_file()


def test_nayer_resumes_with_the_same_embeddings_under_another_path(tmp_path, cifar10_root, teacher_checkpoint):
    first, moved = tmp_path / "a" / "clip.pt", tmp_path / "b" / "clip.pt"
    first.parent.mkdir()
    moved.parent.mkdir()
    torch.save(torch.randn(10, 16), first)
    run = tmp_path / "run"
    stopped = datafree_kd.main(distill_args("nayer", cifar10_root, teacher_checkpoint, run, "--label_embeddings",
                                            str(first), "--max_minutes", "1e-9"))
    assert stopped["stopped"]
    shutil.copyfile(first, moved)
    first.unlink()
    result = datafree_kd.main(distill_args("nayer", cifar10_root, teacher_checkpoint, run, "--label_embeddings",
                                           str(moved), "--resume"))
    assert result["epochs"] == 1
    other = tmp_path / "c.pt"
    torch.save(torch.randn(10, 16), other)
    with pytest.raises(Exception, match="label_embeddings_sha256"):
        datafree_kd.main(distill_args("nayer", cifar10_root, teacher_checkpoint, run, "--label_embeddings",
                                      str(other), "--resume"))


def test_first_line_cuts_long_messages_at_a_word():
    error = ValueError("Weights only load failed. In PyTorch 2.6, we changed the default value of the weights_only "
                       "argument in torch.load from False to True. Re-running torch.load with weights_only set to "
                       "False will likely succeed\nsecond line")
    cut = first_line(error, limit=100)
    assert cut.endswith(" ...") and len(cut) <= 104 and cut[:-4].split()[-1] in error.args[0].split()
    assert first_line(ValueError("short")) == "short" and first_line(ValueError("")) == "ValueError"
