"""Models at 64 and 224 px (docs/METHODS.md §18.2, §18.4, §19.2): sizes, state-dict layouts, shapes, loading.

* ``resnet50``: the CIFAR-style Bottleneck ResNet (3x3 stem, no max-pool) for Tiny-ImageNet;
* ``tv_resnet18``, ``tv_resnet50``, ``tv_mobilenet_v2``: torchvision's ImageNet models, whose published
  weight files must load as they are: the key list (names and order) and the parameter counts are pinned;
* ``resnet{18,34,50}_imagenet``: ljrprocc's Tiny-ImageNet teachers (torchvision layout with a 3x3 biased
  stem and no max-pool); their checkpoints (DDP ``module.`` keys) load through the driver's teacher loader.

Layout and count checks build the models on the meta device (no memory, no init cost); forwards use one
image, at 224 px only for the small models. Where torchvision imports, the logits are compared with
torchvision's own models after loading their random state.
"""
from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

import datafree_kd
from datafree.data import DATASETS
from datafree.errors import CheckpointError
from datafree.models import CLASSIFIERS

# name -> (classes, parameter count). ResNet-50 (CIFAR) at 200 classes is the Tiny-ImageNet teacher (§18.2);
# the torchvision counts at 1000 classes are torchvision's documented ones (§19.2).
PARAMETER_COUNTS: dict[str, tuple[int, int]] = {
    "resnet50": (200, 23_910_152),
    "resnet18_imagenet": (200, 11_271_496),
    "resnet34_imagenet": (200, 21_379_656),
    "resnet50_imagenet": (200, 23_910_216),
    "tv_resnet18": (1000, 11_689_512),
    "tv_resnet50": (1000, 25_557_032),
    "tv_mobilenet_v2": (1000, 3_504_872),
}

# name -> (number of state-dict entries, first 3 keys, last 3 keys, sha256 of the newline-joined key list).
# The tv_* lists are torchvision's (checked key for key against torchvision 0.28 when it was written).
KEY_LAYOUTS: dict[str, tuple[int, tuple[str, ...], tuple[str, ...], str]] = {
    "resnet50": (320, ("conv1.weight", "bn1.weight", "bn1.bias"),
                 ("layer4.2.bn3.num_batches_tracked", "linear.weight", "linear.bias"),
                 "8fcd44aaa73b7095e0d95b7ca47bbe5e5d20198f888149f42397bd15f05a3f87"),
    "resnet18_imagenet": (123, ("conv1.weight", "conv1.bias", "bn1.weight"),
                          ("layer4.1.bn2.num_batches_tracked", "fc.weight", "fc.bias"),
                          "3dcd26fcdc580962ccd77156dd8d9e80c198930f3da874a523dca3012061b317"),
    "resnet34_imagenet": (219, ("conv1.weight", "conv1.bias", "bn1.weight"),
                          ("layer4.2.bn2.num_batches_tracked", "fc.weight", "fc.bias"),
                          "9db6814f37b677a7672098bb7840dd8382a405e964d40dfd7238ad71b6125b24"),
    "resnet50_imagenet": (321, ("conv1.weight", "conv1.bias", "bn1.weight"),
                          ("layer4.2.bn3.num_batches_tracked", "fc.weight", "fc.bias"),
                          "476636f98290ac152bf3367b70514ef11007d50ac330637e26a0aa91e30a7601"),
    "tv_resnet18": (122, ("conv1.weight", "bn1.weight", "bn1.bias"),
                    ("layer4.1.bn2.num_batches_tracked", "fc.weight", "fc.bias"),
                    "779447cf0a59dec805b4b6f442180ea9418f57a558a168774bd4ce61d31e1bee"),
    "tv_resnet50": (320, ("conv1.weight", "bn1.weight", "bn1.bias"),
                    ("layer4.2.bn3.num_batches_tracked", "fc.weight", "fc.bias"),
                    "8f960d1d00758a98352af283a651a2e1bd18a5823592dc0c307b84c759beefcd"),
    "tv_mobilenet_v2": (314, ("features.0.0.weight", "features.0.1.weight", "features.0.1.bias"),
                        ("features.18.1.num_batches_tracked", "classifier.1.weight", "classifier.1.bias"),
                        "398e13a521d3fbb9b8658ea6e7b02f47e7a3625a8991749ed1c2d25ae6571b5e"),
}


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def on_meta(name: str, num_classes: int) -> nn.Module:
    """The model built without memory or init cost: enough for names, shapes and counts."""
    with torch.device("meta"):
        return CLASSIFIERS[name](num_classes)


def bottleneck_resnet50_parameters(num_classes: int, stem: int) -> int:
    """ResNet-50's parameter count by hand: ``stem`` = weights (and biases) of the first conv.

    Per Bottleneck of width w from c input channels: 1x1 conv c·w, 3x3 conv 9·w², 1x1 conv w·4w, three BNs
    (2 parameters per channel: 2w + 2w + 8w); the first block of each stage adds a 1x1 projection c·4w and
    its BN 8w (stage 1 too: 64 -> 256 channels). Then the stem's BN (128) and the head 2048·C + C.
    """
    total, channels = stem + 2 * 64, 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for index in range(blocks):
            out = 4 * width
            total += channels * width + 9 * width * width + width * out + 2 * (width + width + out)
            if index == 0:
                total += channels * out + 2 * out
            channels = out
    return total + 2048 * num_classes + num_classes


# ---------------------------------------------------------------- sizes and layouts


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_parameter_counts(name: str) -> None:
    num_classes, expected = PARAMETER_COUNTS[name]
    assert count_parameters(on_meta(name, num_classes)) == expected


def test_resnet50_counts_agree_with_the_hand_formula() -> None:
    cifar_stem, imagenet_stem, ljrprocc_stem = 3 * 64 * 9, 3 * 64 * 49, 3 * 64 * 9 + 64
    # 23,520,842 / 23,705,252 / 23,910,152 at 10 / 100 / 200 classes (§18.2)
    for num_classes, expected in ((10, 23_520_842), (100, 23_705_252), (200, 23_910_152)):
        assert bottleneck_resnet50_parameters(num_classes, cifar_stem) == expected
        assert count_parameters(on_meta("resnet50", num_classes)) == expected
    assert bottleneck_resnet50_parameters(1000, imagenet_stem) == PARAMETER_COUNTS["tv_resnet50"][1]
    assert bottleneck_resnet50_parameters(200, ljrprocc_stem) == PARAMETER_COUNTS["resnet50_imagenet"][1]


@pytest.mark.parametrize("name", sorted(KEY_LAYOUTS))
def test_state_dict_key_layout_is_pinned(name: str) -> None:
    count, first, last, digest = KEY_LAYOUTS[name]
    keys = list(on_meta(name, PARAMETER_COUNTS[name][0]).state_dict())
    assert (len(keys), tuple(keys[:3]), tuple(keys[-3:])) == (count, first, last)
    assert hashlib.sha256("\n".join(keys).encode()).hexdigest() == digest


def test_layout_details_of_the_torchvision_models() -> None:
    resnet = on_meta("tv_resnet50", 1000)
    assert tuple(resnet.conv1.weight.shape) == (64, 3, 7, 7) and resnet.conv1.bias is None
    assert tuple(resnet.layer1[0].downsample[0].weight.shape) == (256, 64, 1, 1)
    assert resnet.layer1[1].downsample is None and resnet.layer2[0].conv2.stride == (2, 2)  # stride on the 3x3
    assert tuple(resnet.fc.weight.shape) == (1000, 2048)
    small = on_meta("resnet50_imagenet", 200)
    assert tuple(small.conv1.weight.shape) == (64, 3, 3, 3) and small.conv1.stride == (1, 1)
    assert tuple(small.conv1.bias.shape) == (64,)
    mobilenet = on_meta("tv_mobilenet_v2", 1000)
    assert len(mobilenet.features) == 19
    assert len(mobilenet.features[1].conv) == 3 and len(mobilenet.features[2].conv) == 4  # t = 1 has no expansion
    assert mobilenet.features[2].conv[1][0].groups == 96  # depthwise 3x3 over 16·6 channels
    assert isinstance(mobilenet.classifier[0], nn.Dropout) and mobilenet.classifier[0].p == 0.2
    # the input is added back in every repeat after a stage's first block: 0+1+2+3+2+2+0 blocks
    assert [block.use_residual for block in list(mobilenet.features)[1:18]].count(True) == 10
    with torch.device("meta"):
        assert tuple(CLASSIFIERS["tv_mobilenet_v2"](10, in_channels=1).features[0][0].weight.shape) == (32, 1, 3, 3)
        assert tuple(CLASSIFIERS["resnet18_imagenet"](10, in_channels=1).conv1.weight.shape) == (64, 1, 3, 3)


def test_initialisation_follows_torchvision() -> None:
    model = CLASSIFIERS["tv_mobilenet_v2"](1000)
    conv = model.features[18][0]  # 1x1, 320 -> 1280: Kaiming fan-out, std sqrt(2 / 1280)
    assert abs(conv.weight.std().item() - (2.0 / 1280) ** 0.5) < 0.002
    head = model.classifier[1]
    assert abs(head.weight.std().item() - 0.01) < 0.001 and bool((head.bias == 0).all())
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert bool((module.weight == 1).all()) and bool((module.bias == 0).all())
    resnet = CLASSIFIERS["resnet18_imagenet"](200)
    assert bool((resnet.conv1.bias == 0).all())
    conv = resnet.layer4[1].conv2  # 3x3, 512 -> 512: std sqrt(2 / (9 * 512))
    assert abs(conv.weight.std().item() - (2.0 / (9 * 512)) ** 0.5) < 0.002


# ---------------------------------------------------------------- shapes


def stage_sizes(model: nn.Module, image_size: int, stages: tuple[nn.Module, ...]) -> tuple[list[int], torch.Tensor,
                                                                                          torch.Tensor]:
    """Output sizes (height) of ``stages`` for one image, and the model's (logits, feat)."""
    sizes: list[int] = []
    handles = [stage.register_forward_hook(lambda _m, _i, output: sizes.append(output.shape[-1])) for stage in stages]
    with torch.no_grad():
        logits, features = model.eval()(torch.randn(1, 3, image_size, image_size), return_features=True)
    for handle in handles:
        handle.remove()
    return sizes, logits, features


def resnet_stages(model: nn.Module) -> tuple[nn.Module, ...]:
    return model.layer1, model.layer2, model.layer3, model.layer4


@pytest.mark.parametrize(("name", "num_classes", "image_size", "expected_sizes"), [
    ("tv_resnet18", 1000, 224, [56, 28, 14, 7]),   # 7x7/2 stem + max-pool: /4, then /2 per stage
    ("tv_resnet50", 1000, 64, [16, 8, 4, 2]),      # fully convolutional: a smaller image keeps the test fast
    ("resnet50", 200, 64, [64, 32, 16, 8]),        # §18.2: 64, 32, 16, 8 px at 64 px
    ("resnet50", 10, 32, [32, 16, 8, 4]),
    ("resnet18_imagenet", 200, 64, [64, 32, 16, 8]),
])
def test_resnet_stage_and_output_shapes(name: str, num_classes: int, image_size: int,
                                        expected_sizes: list[int]) -> None:
    model = CLASSIFIERS[name](num_classes)
    sizes, logits, features = stage_sizes(model, image_size, resnet_stages(model))
    assert sizes == expected_sizes
    assert logits.shape == (1, num_classes) and features.shape == (1, model.feature_dim)


@pytest.mark.parametrize(("image_size", "last_size"), [(224, 7), (64, 2)])
def test_mobilenet_v2_shapes(image_size: int, last_size: int) -> None:
    model = CLASSIFIERS["tv_mobilenet_v2"](1000)
    sizes, logits, features = stage_sizes(model, image_size, (model.features[-1],))
    assert sizes == [last_size] and logits.shape == (1, 1000) and features.shape == (1, 1280)
    torch.testing.assert_close(model.classifier[1](features), logits)  # feat feeds the last Linear (§1.1)
    with pytest.raises(ValueError, match="no partial forward"):
        model(torch.randn(1, 3, 32, 32), l=1)


@pytest.mark.parametrize(("name", "widths"), [("resnet50", (256, 512, 1024)), ("resnet50_imagenet", (256, 512, 1024))])
def test_partial_forward_continues_from_stage_output(name: str, widths: tuple[int, ...]) -> None:
    model = CLASSIFIERS[name](10).eval()
    outputs: dict[int, torch.Tensor] = {}
    for index, stage in enumerate(resnet_stages(model)[:3], start=1):
        stage.register_forward_hook(lambda _m, _i, output, index=index: outputs.__setitem__(index, output))
    with torch.no_grad():
        full = model(torch.randn(1, 3, 32, 32))
        captured = dict(outputs)
        for depth, width in enumerate(widths, start=1):
            assert captured[depth].shape[1] == width
            torch.testing.assert_close(model(captured[depth], l=depth), full)
    with pytest.raises(ValueError):
        model(torch.randn(1, 3, 32, 32), l=4)


# ---------------------------------------------------------------- loading weights


def randomise_batchnorm_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-default running statistics, so a load that skipped the buffers would change the logits."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model


def test_a_torchvision_style_weight_file_loads_strictly_with_weights_only(tmp_path) -> None:
    """A published file is a bare state_dict, in older releases without ``num_batches_tracked``."""
    source = randomise_batchnorm_statistics(CLASSIFIERS["tv_mobilenet_v2"](1000)).eval()
    state = {key: value for key, value in source.state_dict().items() if not key.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "mobilenet_v2.pth")
    loaded = CLASSIFIERS["tv_mobilenet_v2"](1000)
    loaded.load_state_dict(torch.load(tmp_path / "mobilenet_v2.pth", weights_only=True))
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(images), source(images))


def test_ljrprocc_resnet18_is_the_cifar_resnet18_plus_a_stem_bias() -> None:
    """§18.2's inference: apart from module names and the stem bias, family (b) is the CIFAR ResNet."""
    cifar = randomise_batchnorm_statistics(CLASSIFIERS["resnet18"](200)).eval()
    renamed = {key.replace("linear.", "fc.").replace("shortcut.", "downsample."): value
               for key, value in cifar.state_dict().items()}
    ljrprocc = CLASSIFIERS["resnet18_imagenet"](200).eval()
    missing, unexpected = ljrprocc.load_state_dict(renamed, strict=False)
    assert missing == ["conv1.bias"] and unexpected == []
    assert count_parameters(ljrprocc) == count_parameters(cifar) + 64
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ljrprocc(images), cifar(images))  # the bias starts at 0


def ljrprocc_release(state_dict: dict, arch: str) -> dict:
    """A teacher file as ljrprocc's ``train_scratch.py`` writes it (§18.4): DDP keys, arch, optimizer, scheduler."""
    holder = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(holder.parameters(), lr=0.2, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [120, 150, 180], 0.1)
    return {"epoch": 200, "arch": arch, "state_dict": {f"module.{key}": value for key, value in state_dict.items()},
            "best_acc1": 67.18, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}


# The driver reads only the channel count from the dataset entry; Tiny-ImageNet's when it is registered.
TEACHER_DATASET = "tiny_imagenet" if "tiny_imagenet" in DATASETS else "cifar100"


def teacher_options(path, teacher: str) -> dict:
    return {"teacher_ckpt": str(path), "teacher": teacher, "num_classes": 200, "dataset": TEACHER_DATASET,
            "method": "dafl"}


@pytest.mark.parametrize(("arch", "wrapped"), [("resnet50_imagenet", True), ("resnet18_imagenet", False)])
def test_a_ljrprocc_teacher_loads_through_the_driver(tmp_path, arch: str, wrapped: bool) -> None:
    source = randomise_batchnorm_statistics(CLASSIFIERS[arch](200)).eval()
    with torch.no_grad():
        source.conv1.bias.normal_()  # the biased stem is part of the checkpoint (§18.4)
    path = tmp_path / f"tiny_imagenet_{arch}.pth"
    release = ljrprocc_release(source.state_dict(), arch)
    torch.save(release if wrapped else release["state_dict"], path)
    teacher = datafree_kd.load_teacher(teacher_options(path, arch), torch.device("cpu"), channels_last=False)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(teacher(images), source(images))


def test_a_ljrprocc_teacher_under_a_cifar_name_gets_the_right_flag(tmp_path) -> None:
    source = CLASSIFIERS["resnet18_imagenet"](200)
    release = ljrprocc_release(source.state_dict(), "resnet18_imagenet")
    torch.save(release, tmp_path / "wrapped.pth")
    with pytest.raises(CheckpointError, match="is a resnet18_imagenet, not a resnet18; pass --teacher resnet18_imagenet"):
        datafree_kd.load_teacher(teacher_options(tmp_path / "wrapped.pth", "resnet18"), torch.device("cpu"), False)
    torch.save(release["state_dict"], tmp_path / "bare.pth")  # no arch entry: the keys tell
    with pytest.raises(CheckpointError, match="pass --teacher resnet18_imagenet"):
        datafree_kd.load_teacher(teacher_options(tmp_path / "bare.pth", "resnet18"), torch.device("cpu"), False)


# ---------------------------------------------------------------- against torchvision itself


@pytest.mark.parametrize(("name", "image_size"), [("tv_resnet18", 224), ("tv_resnet50", 64), ("tv_mobilenet_v2", 64)])
def test_logits_match_torchvision_after_loading_its_state(name: str, image_size: int) -> None:
    models = pytest.importorskip("torchvision.models")
    theirs = randomise_batchnorm_statistics(getattr(models, name.removeprefix("tv_"))()).eval()
    ours = CLASSIFIERS[name](1000).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert count_parameters(ours) == count_parameters(theirs)
    ours.load_state_dict(theirs.state_dict())
    images = torch.randn(1, 3, image_size, image_size)
    with torch.no_grad():
        assert torch.equal(ours(images), theirs(images))


def test_ljrprocc_adaptation_of_torchvision_matches_resnet50_imagenet() -> None:
    """ljrprocc builds its teacher from torchvision's ResNet-50 and swaps stem, max-pool, pool and head (§18.2)."""
    models = pytest.importorskip("torchvision.models")
    theirs = models.resnet50()
    theirs.avgpool = nn.AdaptiveAvgPool2d(1)
    theirs.fc = nn.Linear(theirs.fc.in_features, 200)
    theirs.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1)
    theirs.maxpool = nn.Sequential()
    theirs = randomise_batchnorm_statistics(theirs).eval()
    ours = CLASSIFIERS["resnet50_imagenet"](200).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(images), theirs(images))
