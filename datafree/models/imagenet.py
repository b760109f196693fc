"""Classifiers in torchvision's layout: ImageNet models (METHODS.md §19.2) and ljrprocc's 64-px ResNets (§18.4).

Two uses of one layout:

* ``tv_resnet18``, ``tv_resnet50``, ``tv_mobilenet_v2``: the 224-px ImageNet networks whose
  pretrained weights torchvision publishes (§19.2). Module names, the order of the state-dict
  keys and every tensor shape are torchvision's, so a published weight file loads with
  ``model.load_state_dict(torch.load(path, weights_only=True))`` without torchvision installed
  (files of older releases lack the BatchNorm ``num_batches_tracked`` counters; PyTorch fills
  them in on a strict load). 11,689,512 / 25,557,032 / 3,504,872 parameters at 1000 classes.
* ``resnet18_imagenet``, ``resnet34_imagenet``, ``resnet50_imagenet``: ljrprocc's Tiny-ImageNet
  teachers ("family (b)" of §18.2), a torchvision ResNet whose stem is replaced by a 3x3,
  stride-1 conv **with bias** and whose max-pool is removed. The names are those that ljrprocc's
  checkpoints record in their ``arch`` entry, so ``--teacher resnet50_imagenet`` and the default
  teacher path ``<dataset>_resnet50_imagenet.pth`` match their released files.

Every model has the interface of §1.1: ``forward(x, return_features=False, l=0)``, ``feat`` is
the pooled vector that enters the last Linear, and ``feature_dim`` its width. The ResNets take
the partial forward of §1.9 (``l`` stages skipped, 0..3); MobileNet-V2 raises for ``l != 0``.
Initialisation follows torchvision: convolutions N(0, sqrt(2 / (k·k·C_out))) (Kaiming, fan-out),
biases 0, BatchNorm γ = 1, β = 0; the ResNet head keeps PyTorch's default Linear init, the
MobileNet-V2 head N(0, 0.01) with bias 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional
from torch import nn

from datafree.models.initialization import init_conv_and_batchnorm

STAGE_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)
MAX_PARTIAL_DEPTH = 3  # §1.9: l in 0..3, as for the CIFAR ResNet


def downsample_branch(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """torchvision's shortcut projection (``downsample.0`` conv1x1, ``downsample.1`` BN), or None."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class TorchvisionBasicBlock(nn.Module):
    """Two 3x3 convs (stride on the first), post-activation, expansion 1; torchvision's names."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample_branch(in_channels, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = functional.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return functional.relu(out + identity)


class TorchvisionBottleneck(nn.Module):
    """1x1 -> 3x3 (stride here, "v1.5") -> 1x1 (width x4), post-activation; torchvision's names."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = downsample_branch(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = functional.relu(self.bn1(self.conv1(x)))
        out = functional.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return functional.relu(out + identity)


class TorchvisionResNet(nn.Module):
    """torchvision's ResNet (``conv1``, ``bn1``, ``layer1..4``, ``fc``); ``feature_dim`` = 512 x expansion.

    ``small_input_stem=False``: the ImageNet stem, conv 7x7 stride 2 (no bias) -> BN -> ReLU ->
    max-pool 3x3 stride 2 (§19.2). ``True``: ljrprocc's Tiny-ImageNet stem, conv 3x3 stride 1
    **with bias** -> BN -> ReLU and no max-pool (§18.2 family (b)); its bias starts at 0.
    """

    def __init__(self, block: type[TorchvisionBasicBlock] | type[TorchvisionBottleneck],
                 blocks_per_stage: tuple[int, int, int, int], num_classes: int = 1000, in_channels: int = 3,
                 small_input_stem: bool = False) -> None:
        super().__init__()
        if len(blocks_per_stage) != 4:
            raise ValueError(f"ResNet needs 4 stage sizes, got {blocks_per_stage}")
        self.small_input_stem = small_input_stem
        if small_input_stem:
            self.conv1 = nn.Conv2d(in_channels, STAGE_WIDTHS[0], kernel_size=3, stride=1, padding=1, bias=True)
        else:
            self.conv1 = nn.Conv2d(in_channels, STAGE_WIDTHS[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        stages = []
        channels = STAGE_WIDTHS[0]
        for stage_index, (width, num_blocks) in enumerate(zip(STAGE_WIDTHS, blocks_per_stage)):
            stride = 1 if stage_index == 0 else 2
            blocks = [block(channels, width, stride)]
            channels = width * block.expansion
            blocks += [block(channels, width, 1) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_dim = channels
        self.fc = nn.Linear(channels, num_classes)
        init_conv_and_batchnorm(self)

    def forward(
        self, x: torch.Tensor, return_features: bool = False, l: int = 0  # noqa: E741 (name fixed by §1.1)
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, C)``, or ``(logits, feat)`` with ``feat`` ``(B, feature_dim)`` (§1.1).

        ``l`` (§1.9): 0 takes an image, 1/2/3 the output of layer1/layer2/layer3.
        """
        if not 0 <= l <= MAX_PARTIAL_DEPTH:
            raise ValueError(f"ResNet partial forward supports l in 0..{MAX_PARTIAL_DEPTH}, got l={l}")
        out = x
        if l == 0:
            out = functional.relu(self.bn1(self.conv1(out)))
            if not self.small_input_stem:
                out = functional.max_pool2d(out, kernel_size=3, stride=2, padding=1)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4)[l:]:
            out = stage(out)
        features = torch.flatten(functional.adaptive_avg_pool2d(out, 1), 1)
        logits = self.fc(features)
        if return_features:
            return logits, features
        return logits


# MobileNet-V2 (§19.2): (expansion t, output width c, repeats n, first stride s) per stage.
MOBILENET_V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
MOBILENET_V2_STEM_WIDTH = 32
MOBILENET_V2_LAST_WIDTH = 1280
MOBILENET_V2_DROPOUT = 0.2


def conv_bn_relu6(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                  groups: int = 1) -> nn.Sequential:
    """conv (no bias, "same" padding) -> BN -> ReLU6, indexed 0/1/2 as torchvision's Conv2dNormActivation."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                  groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNet-V2 block, held in ``conv`` like torchvision's: [1x1 expand ->] 3x3 depthwise -> 1x1 linear.

    The expansion conv is left out when t = 1; the input is added back when the stride is 1 and
    the width is unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(in_channels, hidden, 1))
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False),
                   nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """torchvision's MobileNet-V2 at width 1.0 (``features.0..18``, ``classifier.1``); ``feature_dim`` = 1280.

    ``feat`` is the pooled 1280-d vector; the head is dropout (p 0.2, active only in train mode)
    followed by Linear(1280, C). No partial forward: ``l != 0`` raises ValueError (§1.1).
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu6(in_channels, MOBILENET_V2_STEM_WIDTH, 3, stride=2)]
        channels = MOBILENET_V2_STEM_WIDTH
        for expand_ratio, width, repeats, first_stride in MOBILENET_V2_STAGES:
            for index in range(repeats):
                layers.append(InvertedResidual(channels, width, first_stride if index == 0 else 1, expand_ratio))
                channels = width
        layers.append(conv_bn_relu6(channels, MOBILENET_V2_LAST_WIDTH, 1))
        self.features = nn.Sequential(*layers)
        self.feature_dim = MOBILENET_V2_LAST_WIDTH
        self.classifier = nn.Sequential(nn.Dropout(p=MOBILENET_V2_DROPOUT),
                                        nn.Linear(MOBILENET_V2_LAST_WIDTH, num_classes))
        init_conv_and_batchnorm(self)
        head = self.classifier[1]
        nn.init.normal_(head.weight, 0.0, 0.01)
        nn.init.zeros_(head.bias)

    def forward(
        self, x: torch.Tensor, return_features: bool = False, l: int = 0  # noqa: E741 (name fixed by §1.1)
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, C)``, or ``(logits, feat)`` with ``feat`` ``(B, 1280)`` (§1.1)."""
        if l != 0:
            raise ValueError(f"MobileNet-V2 has no partial forward (§1.9); got l={l}")
        features = torch.flatten(functional.adaptive_avg_pool2d(self.features(x), 1), 1)
        logits = self.classifier(features)
        if return_features:
            return logits, features
        return logits


def tv_resnet18(num_classes: int = 1000, in_channels: int = 3) -> TorchvisionResNet:
    """torchvision's ResNet-18 for 224-px images, BasicBlocks [2, 2, 2, 2] (§19.2)."""
    return TorchvisionResNet(TorchvisionBasicBlock, (2, 2, 2, 2), num_classes, in_channels)


def tv_resnet50(num_classes: int = 1000, in_channels: int = 3) -> TorchvisionResNet:
    """torchvision's ResNet-50 (v1.5) for 224-px images, Bottlenecks [3, 4, 6, 3] (§19.2)."""
    return TorchvisionResNet(TorchvisionBottleneck, (3, 4, 6, 3), num_classes, in_channels)


def tv_mobilenet_v2(num_classes: int = 1000, in_channels: int = 3) -> MobileNetV2:
    """torchvision's MobileNet-V2, width 1.0, for 224-px images (§19.2)."""
    return MobileNetV2(num_classes, in_channels)


def resnet18_imagenet(num_classes: int = 200, in_channels: int = 3) -> TorchvisionResNet:
    """ljrprocc's Tiny-ImageNet ResNet-18: torchvision layout, 3x3 biased stem, no max-pool (§18.2, §18.4)."""
    return TorchvisionResNet(TorchvisionBasicBlock, (2, 2, 2, 2), num_classes, in_channels, small_input_stem=True)


def resnet34_imagenet(num_classes: int = 200, in_channels: int = 3) -> TorchvisionResNet:
    """ljrprocc's Tiny-ImageNet ResNet-34: torchvision layout, 3x3 biased stem, no max-pool (§18.2, §18.4)."""
    return TorchvisionResNet(TorchvisionBasicBlock, (3, 4, 6, 3), num_classes, in_channels, small_input_stem=True)


def resnet50_imagenet(num_classes: int = 200, in_channels: int = 3) -> TorchvisionResNet:
    """ljrprocc's Tiny-ImageNet ResNet-50: torchvision layout, 3x3 biased stem, no max-pool (§18.2, §18.4)."""
    return TorchvisionResNet(TorchvisionBottleneck, (3, 4, 6, 3), num_classes, in_channels, small_input_stem=True)
