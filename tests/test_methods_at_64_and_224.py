"""Every method through the whole loop at 64 px (Tiny-ImageNet) and at a reduced 224-px setting
(ImageNet), on JPEG fixture trees the tests write (docs/METHODS.md §18, §19, §21).

The fixtures have 3 classes (both entries are narrowed to 3 while a test runs); teachers are a
random ``tiny_cnn`` (any input size) saved as a classifier checkpoint of each dataset. Each run is
one epoch of two KD steps with narrow generators, tiny batches and the method's test preset.
At 224 px a method whose generator has no deep body (G-L, G-D: DAFL, ZSKT, DFQ, DFAD, PRE-DFKD,
MB-DFKD) is refused in one line before anything is created (§19.3); G-Cu runs with ``--depth 4``
(a 14-px start map) and Fast with its start-map reset off, the values a 224-px launcher passes.
"""
from __future__ import annotations


import pytest
import torch

import datafree_kd
import registry
from datafree.errors import UsageError
from datafree.models import LargeGenerator, ReferenceGenerator
from datafree.run.checkpoints import save_classifier
from imagenet_fixtures import write_imagefolder, write_tiny_imagenet
from conftest import narrow_generator, tiny_method_flags
from tiny_models import TinyCNN, tiny_synthesis_setup

METHODS = sorted(registry.METHODS)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """One data root holding both fixture trees (3 classes each) and a tiny_cnn teacher per dataset."""
    root = tmp_path_factory.mktemp("image_sizes")
    data = root / "data"
    write_tiny_imagenet(data, n_train=2, n_val=6)
    write_imagefolder(data)
    torch.manual_seed(0)
    teachers = {}
    for dataset in ("tiny_imagenet", "imagenet"):
        teachers[dataset] = root / f"{dataset}_tiny_cnn.pth"
        save_classifier(teachers[dataset], TinyCNN(3), "tiny_cnn", 3, dataset)
    return data, teachers


@pytest.fixture
def three_classes_tiny_cnn(three_classes, monkeypatch):
    """Both entries narrowed to the fixtures' 3 classes (conftest), and ``tiny_cnn`` registered."""
    monkeypatch.setitem(registry.CLASSIFIERS, "tiny_cnn", TinyCNN)


def arguments(method: str, dataset: str, trees, save_dir) -> list[str]:
    data, teachers = trees
    options = registry.get_method(method).Options
    extra = []
    if dataset == "imagenet" and "depth" in options.flag_names():
        extra += ["--depth", "4"]                     # G-Cu: 224 / 2^4 = 14 px start map (§19.3)
    if dataset == "imagenet" and "reset_l0_epoch" in options.flag_names():
        extra += ["--reset_l0_epoch", "-1"]
    return ["--method", method, "--dataset", dataset, "--teacher", "tiny_cnn", "--student", "tiny_cnn",
            "--teacher_ckpt", str(teachers[dataset]), "--data_root", str(data), "--save_dir", str(save_dir),
            "--cache_dir", str(data.parent / "cache"), "--device", "cpu", "--no_progress", "--epochs", "1",
            "--ep_steps", "2", "--kd_steps", "1", "--g_steps", "1", *narrow_generator(method, 4),
            *tiny_method_flags(method), "--batch_size", "6", "--synthesis_batch_size", "6", *extra]


def shallow(method: str) -> bool:
    """Whether the method, built at 32 px with its defaults, generates with G-L or G-D (§19.3)."""
    synthesizer = registry.get_method(method)(tiny_synthesis_setup(batch_size=4),
                                              registry.get_method(method).Options.resolve({}))
    return isinstance(getattr(synthesizer, "image_generator", None), (LargeGenerator, ReferenceGenerator))


@pytest.mark.parametrize("method", METHODS)
def test_one_epoch_at_64_px(method, trees, three_classes_tiny_cnn, tmp_path):
    summary = datafree_kd.main(arguments(method, "tiny_imagenet", trees, tmp_path / "run"))
    assert summary["epochs"] == 1 and 0.0 <= summary["best_acc1"] <= 100.0
    assert (tmp_path / "run" / "last.pth").is_file()


@pytest.mark.parametrize("method", METHODS)
def test_one_epoch_at_224_px_or_a_one_line_refusal(method, trees, three_classes_tiny_cnn, tmp_path):
    argv = arguments(method, "imagenet", trees, tmp_path / "run")
    if shallow(method):
        with pytest.raises(UsageError, match="px") as refused:
            datafree_kd.main(argv)
        assert "\n" not in str(refused.value)
        assert not (tmp_path / "run").exists()
        return
    summary = datafree_kd.main(argv)
    assert summary["epochs"] == 1 and 0.0 <= summary["best_acc1"] <= 100.0
