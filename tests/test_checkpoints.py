"""Teacher checkpoints in the formats researchers have (docs/METHODS.md §2.2, §7 item 12).

CMI's released teachers (``{dataset}_{arch}.pth``: a dict with ``epoch``, ``arch``,
``state_dict``, ``best_acc1``, ``optimizer``, ``scheduler``) distil as they are; so do
DataParallel saves (``module.`` keys), checkpoints naming the architecture ``vgg11_bn``, and a
plain ``state_dict`` (with a note). A mismatch hint never names a model the zoo lacks.
"""
from __future__ import annotations

import pytest
import torch

import datafree_kd
import registry
from conftest import distill_args
from datafree.run.checkpoints import load_classifier
from datafree.errors import CheckpointError


def cmi_release(state_dict: dict, arch: str) -> dict:
    """A teacher file exactly as the CMI repository releases them."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [120, 150, 180])
    return {"epoch": 200, "arch": arch, "state_dict": state_dict, "best_acc1": 94.87,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}


def test_a_released_cmi_teacher_distils_as_it_is(tmp_path, cifar10_root, teacher_checkpoint):
    trained = torch.load(teacher_checkpoint, weights_only=True)["state_dict"]
    released = tmp_path / "cifar10_wrn16_1.pth"
    torch.save(cmi_release({f"module.{key}": value for key, value in trained.items()}, "wrn16_1"), released)
    result = datafree_kd.main(distill_args("dafl", cifar10_root, released, tmp_path / "run"))
    assert result["epochs"] == 1 and result["best_acc1"] > 0


def test_aliases_prefixes_and_plain_state_dicts_load(tmp_path, capsys):
    vgg = registry.get_model("vgg11", 10).eval()
    torch.save(cmi_release(vgg.state_dict(), "vgg11_bn"), tmp_path / "vgg.pth")
    loaded = registry.get_model("vgg11", 10).eval()
    assert load_classifier(tmp_path / "vgg.pth", loaded, "vgg11", 10, "cifar10")["best_acc1"] == 94.87
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(vgg(images), loaded(images))
    wrn = registry.get_model("wrn16_1", 10).eval()
    torch.save({f"module.{key}": value for key, value in wrn.state_dict().items()}, tmp_path / "plain.pth")
    plain = registry.get_model("wrn16_1", 10).eval()
    assert load_classifier(tmp_path / "plain.pth", plain, "wrn16_1", 10, "cifar10") == {}
    assert torch.equal(wrn(images), plain(images))
    assert "plain state_dict without metadata; loading it as a wrn16_1" in capsys.readouterr().out


def test_mismatch_hints_name_only_models_of_the_zoo(tmp_path):
    wrn = registry.get_model("wrn16_1", 10)
    torch.save(cmi_release(wrn.state_dict(), "wrn_16_1"), tmp_path / "wrn.pth")
    with pytest.raises(CheckpointError, match="is a wrn16_1, not a wrn16_2; pass --teacher wrn16_1"):
        load_classifier(tmp_path / "wrn.pth", registry.get_model("wrn16_2", 10), "wrn16_2", 10, "cifar10")
    torch.save(cmi_release(wrn.state_dict(), "resnet56"), tmp_path / "other.pth")
    with pytest.raises(CheckpointError) as refused:
        load_classifier(tmp_path / "other.pth", registry.get_model("wrn16_1", 10), "wrn16_1", 10, "cifar10")
    assert "'resnet56', an architecture this model zoo does not have" in str(refused.value)
    assert "--teacher resnet56" not in str(refused.value)
    torch.save(wrn.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="does not fit a wrn16_2 with 10 classes"):
        load_classifier(tmp_path / "bare.pth", registry.get_model("wrn16_2", 10), "wrn16_2", 10, "cifar10")
