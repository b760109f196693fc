"""Tests for the model zoo (METHODS.md §1): exact sizes, shapes, partial forward, inits, Normalizer.

CPU only and fast: forward passes use batch 2.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datafree.models import (
    CLASSIFIERS,
    CurriculumGenerator,
    GeneratorS,
    LargeGenerator,
    Normalizer,
    ResNet,
    WideResNet,
    reset_generator_init,
)

BATCH = 2

# §1.6: name -> (params C=10, params C=100, feat D, #conv, #BN, sum of BN channels or None for "—")
CLASSIFIER_TABLE: dict[str, tuple[int, int, int, int, int, int | None]] = {
    "resnet18": (11_173_962, 11_220_132, 512, 20, 20, None),
    "resnet34": (21_282_122, 21_328_292, 512, 36, 36, 8_512),
    "resnet50": (23_520_842, 23_705_252, 2048, 53, 53, 26_560),  # §18.2 (Tiny-ImageNet teacher)
    "vgg11": (9_231_114, 9_277_284, 512, 8, 8, 2_752),
    "wrn16_1": (175_066, 180_916, 64, 15, 13, None),
    "wrn16_2": (691_674, 703_284, 128, 16, 13, None),
    "wrn40_1": (563_930, 569_780, 64, 39, 37, None),
    "wrn40_2": (2_243_546, 2_255_156, 128, 40, 37, 2_704),
    # §1.5 (MNIST, one input channel): no BN layer
    "lenet5": (61_706, 69_356, 120, 3, 0, None),
    "lenet5_half": (15_738, 19_608, 60, 3, 0, None),
    "hintonnet": (2_395_210, 2_503_300, 1200, 0, 0, None),
    "hintonnet_half": (1_276_810, 1_348_900, 800, 0, 0, None),
    # §18.2 family (b), ljrprocc's Tiny-ImageNet ResNets: the CIFAR count + the 64 stem biases
    "resnet18_imagenet": (11_174_026, 11_220_196, 512, 20, 20, 4_800),
    "resnet34_imagenet": (21_282_186, 21_328_356, 512, 36, 36, 8_512),
    "resnet50_imagenet": (23_520_906, 23_705_316, 2048, 53, 53, 26_560),
    # §19.2, torchvision's ImageNet models (counts at 1000 classes in tests/test_models_64_224.py)
    "tv_resnet18": (11_181_642, 11_227_812, 512, 20, 20, 4_800),
    "tv_resnet50": (23_528_522, 23_712_932, 2048, 53, 53, 26_560),
    "tv_mobilenet_v2": (2_236_682, 2_351_972, 1280, 52, 52, 17_056),
}

# §1.9: l -> input shape (C, H, W) of the partial forward; "k" stands for the WRN widen factor.
RESNET_PARTIAL_INPUTS = {0: (3, 32, 32), 1: (64, 32, 32), 2: (128, 16, 16), 3: (256, 8, 8)}
WRN_WIDEN = {"wrn16_1": 1, "wrn16_2": 2, "wrn40_1": 1, "wrn40_2": 2}

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def wrn_partial_inputs(widen_factor: int) -> dict[int, tuple[int, int, int]]:
    return {0: (3, 32, 32), 1: (16 * widen_factor, 32, 32), 2: (32 * widen_factor, 16, 16)}


# ---------------------------------------------------------------- classifiers


def test_registry_has_exactly_the_spec_names() -> None:
    assert sorted(CLASSIFIERS) == sorted(CLASSIFIER_TABLE)


@pytest.mark.parametrize("name", sorted(CLASSIFIER_TABLE))
def test_classifier_structure_matches_table(name: str) -> None:
    params_c10, params_c100, feature_dim, num_conv, num_bn, bn_channels = CLASSIFIER_TABLE[name]
    model_c10 = CLASSIFIERS[name](10)
    model_c100 = CLASSIFIERS[name](100)
    assert count_parameters(model_c10) == params_c10
    assert count_parameters(model_c100) == params_c100
    assert model_c10.feature_dim == feature_dim
    assert sum(isinstance(module, nn.Conv2d) for module in model_c10.modules()) == num_conv
    batch_norms = [module for module in model_c10.modules() if isinstance(module, nn.BatchNorm2d)]
    assert len(batch_norms) == num_bn
    if bn_channels is not None:
        assert sum(module.num_features for module in batch_norms) == bn_channels


@pytest.mark.parametrize("name", sorted(CLASSIFIER_TABLE))
def test_classifier_output_and_feature_shapes(name: str) -> None:
    feature_dim = CLASSIFIER_TABLE[name][2]
    model = CLASSIFIERS[name](100).eval()
    images = torch.randn(BATCH, 1 if name.startswith(("lenet", "hinton")) else 3, 32, 32)
    with torch.no_grad():
        logits = model(images)
        logits_again, features = model(images, return_features=True)
    assert logits.shape == (BATCH, 100)
    assert features.shape == (BATCH, feature_dim)
    torch.testing.assert_close(logits, logits_again)
    # feat is the vector that feeds the final linear layer (§1.1); LeNet's is DAFL's 120-d (60-d)
    # conv3 output, which feeds fc1 -> ReLU -> fc2 (§1.5).
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    head = (lambda x: linears[-1](torch.relu(linears[-2](x)))) if name.startswith("lenet") else linears[-1]
    torch.testing.assert_close(head(features), logits)


def test_resnet_class_and_stage_attributes() -> None:
    model = CLASSIFIERS["resnet18"](10)
    assert isinstance(model, ResNet)
    assert [len(model.layer1), len(model.layer2), len(model.layer3), len(model.layer4)] == [2, 2, 2, 2]
    resnet34 = CLASSIFIERS["resnet34"](10)
    assert [len(resnet34.layer1), len(resnet34.layer2), len(resnet34.layer3), len(resnet34.layer4)] == [3, 4, 6, 3]
    assert not any(isinstance(module, nn.MaxPool2d) for module in model.modules())  # §1.2: no max-pool


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_resnet_partial_forward_shapes(name: str) -> None:
    model = CLASSIFIERS[name](10).eval()
    with torch.no_grad():
        for depth, shape in RESNET_PARTIAL_INPUTS.items():
            logits, features = model(torch.randn(BATCH, *shape), return_features=True, l=depth)
            assert logits.shape == (BATCH, 10)
            assert features.shape == (BATCH, 512)


@pytest.mark.parametrize("name", sorted(WRN_WIDEN))
def test_wrn_partial_forward_shapes(name: str) -> None:
    model = CLASSIFIERS[name](10).eval()
    assert isinstance(model, WideResNet)
    with torch.no_grad():
        for depth, shape in wrn_partial_inputs(WRN_WIDEN[name]).items():
            logits, features = model(torch.randn(BATCH, *shape), return_features=True, l=depth)
            assert logits.shape == (BATCH, 10)
            assert features.shape == (BATCH, 64 * WRN_WIDEN[name])


def test_resnet_partial_forward_continues_from_stage_output() -> None:
    model = CLASSIFIERS["resnet18"](10).eval()
    stage_outputs: dict[int, torch.Tensor] = {}
    for index, stage in enumerate((model.layer1, model.layer2, model.layer3), start=1):
        stage.register_forward_hook(
            lambda _module, _inputs, output, index=index: stage_outputs.__setitem__(index, output)
        )
    images = torch.randn(BATCH, 3, 32, 32)
    with torch.no_grad():
        full_logits = model(images)
        captured = dict(stage_outputs)
        for depth in (1, 2, 3):
            assert tuple(captured[depth].shape[1:]) == RESNET_PARTIAL_INPUTS[depth]
            torch.testing.assert_close(model(captured[depth], l=depth), full_logits)


def test_wrn_partial_forward_continues_from_group_output() -> None:
    model = CLASSIFIERS["wrn16_2"](10).eval()
    group_outputs: dict[int, torch.Tensor] = {}
    for index, group in enumerate((model.block1, model.block2), start=1):
        group.register_forward_hook(
            lambda _module, _inputs, output, index=index: group_outputs.__setitem__(index, output)
        )
    images = torch.randn(BATCH, 3, 32, 32)
    with torch.no_grad():
        full_logits = model(images)
        captured = dict(group_outputs)
        for depth in (1, 2):
            assert tuple(captured[depth].shape[1:]) == wrn_partial_inputs(2)[depth]
            torch.testing.assert_close(model(captured[depth], l=depth), full_logits)


@pytest.mark.parametrize(
    ("name", "bad_depths"),
    [("resnet18", (4, -1)), ("wrn16_1", (3, -1)), ("vgg11", (1, 2, -1))],
)
def test_unsupported_partial_depth_raises(name: str, bad_depths: tuple[int, ...]) -> None:
    model = CLASSIFIERS[name](10)
    for depth in bad_depths:
        with pytest.raises(ValueError):
            model(torch.randn(BATCH, 3, 32, 32), l=depth)


def test_vgg_applies_pool3_only_for_64_px() -> None:
    model = CLASSIFIERS["vgg11"](10).eval()
    block4_input_sizes: list[tuple[int, int]] = []
    model.block4.register_forward_hook(
        lambda _module, inputs, _output: block4_input_sizes.append(tuple(inputs[0].shape[-2:]))
    )
    with torch.no_grad():
        logits_32 = model(torch.randn(BATCH, 3, 32, 32))
        logits_64, features_64 = model(torch.randn(BATCH, 3, 64, 64), return_features=True)
    assert logits_32.shape == (BATCH, 10)
    assert logits_64.shape == (BATCH, 10)
    assert features_64.shape == (BATCH, 512)
    # 32 px: 32->16->8->4, pool3 skipped; 64 px: 64->32->16->8, pool3 -> 4.
    assert block4_input_sizes == [(4, 4), (4, 4)]


def test_vgg_init_follows_spec() -> None:
    model = CLASSIFIERS["vgg11"](10)
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert all(bool((conv.bias == 0).all()) for conv in convs)
    last_conv = convs[-1]  # 512 -> 512, k=3: std sqrt(2 / (9 * 512))
    assert abs(last_conv.weight.std().item() - (2.0 / (9 * 512)) ** 0.5) < 0.002
    assert abs(model.classifier.weight.std().item() - 0.01) < 0.001
    assert bool((model.classifier.bias == 0).all())
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert bool((module.weight == 1).all()) and bool((module.bias == 0).all())
    assert len([module for module in model.modules() if isinstance(module, nn.Linear)]) == 1  # a single FC


def test_wrn_init_and_dropout_argument() -> None:
    model = CLASSIFIERS["wrn40_2"](10)
    assert bool((model.fc.bias == 0).all())
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert bool((module.weight == 1).all()) and bool((module.bias == 0).all())
    conv = model.block3.layer[1].conv2  # 128 -> 128, k=3: std sqrt(2 / (9 * 128))
    assert abs(conv.weight.std().item() - (2.0 / (9 * 128)) ** 0.5) < 0.003
    dropouts = [module for module in model.modules() if isinstance(module, nn.Dropout)]
    assert dropouts and all(module.p == 0.0 for module in dropouts)
    with_dropout = WideResNet(16, 10, 1, dropout_rate=0.3)
    assert all(module.p == 0.3 for module in with_dropout.modules() if isinstance(module, nn.Dropout))
    # k = 1: group 1 is 16 -> 16 without a shortcut conv; k = 2: every group starts with one.
    assert CLASSIFIERS["wrn16_1"](10).block1.layer[0].convShortcut is None
    assert isinstance(CLASSIFIERS["wrn16_2"](10).block1.layer[0].convShortcut, nn.Conv2d)


def test_wrn_shortcut_conv_sees_the_activated_input() -> None:
    """§1.4: when the width changes, the 1x1 shortcut is applied to ReLU(BN1(x)), not to raw x."""
    block = CLASSIFIERS["wrn16_2"](10).eval().block2.layer[0]
    shortcut_inputs: list[torch.Tensor] = []
    block.convShortcut.register_forward_hook(lambda _module, inputs, _output: shortcut_inputs.append(inputs[0]))
    features = torch.randn(BATCH, 32, 8, 8)
    with torch.no_grad():
        block.bn1.running_mean.fill_(0.5)
        block(features)
        torch.testing.assert_close(shortcut_inputs[0], torch.relu(block.bn1(features)))


def test_wrn_rejects_bad_depth() -> None:
    with pytest.raises(ValueError):
        WideResNet(depth=15, num_classes=10)


# ---------------------------------------------------------------- generators


@pytest.mark.parametrize(
    ("builder", "expected_params", "nz", "img_size"),
    [
        (lambda: GeneratorS(), 2_328_899, 256, 32),
        (lambda: LargeGenerator(nz=256), 4_581_955, 256, 32),
        (lambda: LargeGenerator(nz=512), 8_776_259, 512, 32),
        (lambda: CurriculumGenerator(), 8_776_259, 512, 32),
        (lambda: CurriculumGenerator(nz=1024, depth=3, img_size=64), 35_139_139, 1024, 64),
    ],
    ids=["G-S", "G-L-256", "G-L-512", "G-Cu-d2", "G-Cu-d3-64px"],
)
def test_generator_sizes_shapes_and_range(builder, expected_params: int, nz: int, img_size: int) -> None:
    generator = builder()
    assert count_parameters(generator) == expected_params
    assert generator.nz == nz
    images = generator(torch.randn(BATCH, nz)).detach()
    assert images.shape == (BATCH, 3, img_size, img_size)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    generator.eval()
    with torch.no_grad():
        assert generator(torch.randn(BATCH, nz)).shape == (BATCH, 3, img_size, img_size)


def test_curriculum_d2_is_layer_for_layer_large_generator() -> None:
    curriculum = CurriculumGenerator(nz=512, depth=2, img_size=32)
    large = LargeGenerator(nz=512)
    assert [tuple(p.shape) for p in curriculum.parameters()] == [tuple(p.shape) for p in large.parameters()]
    assert [type(m) for m in curriculum.modules()][1:] == [type(m) for m in large.modules()][1:]


def test_generator_uses_nearest_upsampling_and_slope_0_2() -> None:
    generator = GeneratorS()
    upsamplings = [module for module in generator.modules() if isinstance(module, nn.Upsample)]
    assert len(upsamplings) == 2 and all(module.mode == "nearest" for module in upsamplings)
    assert all(module.negative_slope == 0.2 for module in generator.modules() if isinstance(module, nn.LeakyReLU))


def test_generators_reject_bad_sizes() -> None:
    with pytest.raises(ValueError):
        GeneratorS(img_size=30)
    with pytest.raises(ValueError):
        CurriculumGenerator(depth=3, img_size=36)
    with pytest.raises(ValueError):
        GeneratorS()(torch.randn(BATCH, 100))


def test_reset_generator_init_statistics_and_reproducibility() -> None:
    generator = LargeGenerator(nz=256)
    reset_generator_init(generator, generator=torch.Generator().manual_seed(0))
    batch_norm_weights = torch.cat(
        [module.weight.detach() for module in generator.modules() if isinstance(module, nn.BatchNorm2d)]
    )
    assert batch_norm_weights.numel() == 256 + 128 + 64
    assert abs(batch_norm_weights.mean().item() - 1.0) < 0.01
    assert abs(batch_norm_weights.std().item() - 0.02) < 0.005
    assert abs(generator.linear.weight.mean().item()) < 0.001
    assert abs(generator.linear.weight.std().item() - 0.02) < 0.001
    for module in generator.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and module.bias is not None:
            assert bool((module.bias == 0).all())
    twin = LargeGenerator(nz=256)
    reset_generator_init(twin, generator=torch.Generator().manual_seed(0))
    for parameter, twin_parameter in zip(generator.parameters(), twin.parameters()):
        torch.testing.assert_close(parameter, twin_parameter, rtol=0, atol=0)
    reset_generator_init(twin, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(generator.linear.weight, twin.linear.weight)


# ---------------------------------------------------------------- normalizer


def test_normalizer_round_trip_and_formula() -> None:
    normalizer = Normalizer(CIFAR10_MEAN, CIFAR10_STD)
    images = torch.rand(BATCH, 3, 8, 8)
    normalized = normalizer(images)
    expected = (images - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(normalized, expected)
    torch.testing.assert_close(normalizer.denormalize(normalized), images)
    torch.testing.assert_close(normalizer(images[0]), expected[0])  # unbatched (C, H, W) too


def test_normalizer_clamp_bounds() -> None:
    normalizer = Normalizer(CIFAR10_MEAN, CIFAR10_STD)
    wild = torch.randn(BATCH, 3, 8, 8) * 10
    clamped = normalizer.clamp_normalized(wild)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert bool((clamped >= -mean / std - 1e-6).all()) and bool((clamped <= (1 - mean) / std + 1e-6).all())
    # Both bounds are reached for these wide inputs, and de-normalised pixels lie in [0, 1].
    torch.testing.assert_close(clamped.amin(dim=(0, 2, 3)), (-mean / std).flatten())
    torch.testing.assert_close(clamped.amax(dim=(0, 2, 3)), ((1 - mean) / std).flatten())
    pixels = normalizer.denormalize(clamped)
    assert float(pixels.min()) >= -1e-6 and float(pixels.max()) <= 1 + 1e-6
    inside = normalizer(torch.rand(BATCH, 3, 8, 8))
    torch.testing.assert_close(normalizer.clamp_normalized(inside), inside)


def test_normalizer_buffers_move_but_are_not_saved() -> None:
    normalizer = Normalizer(CIFAR10_MEAN, CIFAR10_STD)
    assert sorted(name for name, _ in normalizer.named_buffers()) == ["mean", "std"]
    assert normalizer.state_dict() == {}
    normalizer = normalizer.to(torch.float64)
    assert normalizer.mean.dtype == torch.float64 and normalizer.std.dtype == torch.float64
    assert normalizer(torch.rand(BATCH, 3, 4, 4, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError):
        Normalizer((0.5, 0.5), (0.5,))
    with pytest.raises(ValueError):
        Normalizer((0.5,), (0.0,))
