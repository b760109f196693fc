"""ResNet-18 / ResNet-34 / ResNet-50, CIFAR variant (METHODS.md §1.2, §18.2).

The DAFL ResNet for 32x32 inputs: a 3x3 stem without max-pool, four stages of
post-activation residual blocks (base widths 64, 128, 256, 512) and a linear head on
the globally pooled feature. ResNet-18/34 use BasicBlocks (feature 512-d); ResNet-50
uses Bottleneck blocks (expansion 4, feature 2048-d), the 64-px Tiny-ImageNet teacher
of §18.2. The pooling is adaptive, so the same networks take 64-px images (stages then
give 64, 32, 16, 8 px). Weight init is PyTorch's default (§1.2).

Sub-module names (``conv1``, ``bn1``, ``layer1..layer4``, ``linear``; per block
``conv1``, ``bn1``, ``conv2``, ``bn2`` [, ``conv3``, ``bn3``], ``shortcut``) follow the
reference implementation so that its state-dict keys, and hence released teacher
checkpoints, load without renaming.

``forward(x, return_features=False, l=0)`` implements the common interface of
§1.1 and the partial forward of §1.9: ``l`` leading stages are bypassed and
``x`` is then the output feature map of stage ``l``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional
from torch import nn

STAGE_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)
MAX_PARTIAL_DEPTH = 3  # §1.9: l in 0..3 (layer1..layer3 outputs may be fed in)


class BasicBlock(nn.Module):
    """Post-activation residual block with expansion 1 (§1.2).

    conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, added to the shortcut
    (identity, or conv1x1(stride) -> BN when the shape changes), then ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Sequential()  # identity; an empty Sequential keeps reference state-dict keys

    expansion = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = functional.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return functional.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """Post-activation bottleneck block with expansion 4 (§18.2).

    conv1x1 -> BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv1x1 (width x4) -> BN,
    added to the shortcut (identity, or conv1x1(stride) -> BN when the shape changes),
    then ReLU. The stride sits on the 3x3 conv, as in the reference CIFAR code and in
    torchvision's ResNet-50 ("v1.5").
    """

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
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = functional.relu(self.bn1(self.conv1(x)))
        out = functional.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return functional.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet with a 3x3 stem and no max-pool (§1.2); ``feature_dim`` = 512 x block expansion."""

    def __init__(self, blocks_per_stage: tuple[int, int, int, int], num_classes: int = 10,
                 in_channels: int = 3, block: type[BasicBlock] | type[Bottleneck] = BasicBlock) -> None:
        super().__init__()
        if len(blocks_per_stage) != 4:
            raise ValueError(f"ResNet needs 4 stage sizes, got {blocks_per_stage}")
        self.feature_dim = STAGE_WIDTHS[-1] * block.expansion
        self.conv1 = nn.Conv2d(in_channels, STAGE_WIDTHS[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        in_channels = STAGE_WIDTHS[0]
        stages = []
        for stage_index, (width, num_blocks) in enumerate(zip(STAGE_WIDTHS, blocks_per_stage)):
            first_stride = 1 if stage_index == 0 else 2
            stages.append(self._make_stage(block, in_channels, width, num_blocks, first_stride))
            in_channels = width * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(self.feature_dim, num_classes)

    @staticmethod
    def _make_stage(block: type[BasicBlock] | type[Bottleneck], in_channels: int, width: int, num_blocks: int,
                    first_stride: int) -> nn.Sequential:
        """One stage: the first block changes width/stride, the rest keep the shape."""
        blocks = [block(in_channels, width, first_stride)]
        blocks += [block(width * block.expansion, width, 1) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    def forward(
        self, x: torch.Tensor, return_features: bool = False, l: int = 0  # noqa: E741 (name fixed by §1.1)
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, C)``, or ``(logits, feat)`` with ``feat`` ``(B, feature_dim)`` (§1.1).

        ``l`` (§1.9) is the number of leading stages bypassed: 0 takes an image,
        1/2/3 take the output of layer1/layer2/layer3. Raises ValueError outside 0..3.
        """
        if not 0 <= l <= MAX_PARTIAL_DEPTH:
            raise ValueError(f"ResNet partial forward supports l in 0..{MAX_PARTIAL_DEPTH}, got l={l}")
        out = x
        if l == 0:
            out = functional.relu(self.bn1(self.conv1(out)))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4)[l:]:
            out = stage(out)
        features = torch.flatten(functional.adaptive_avg_pool2d(out, 1), 1)
        logits = self.linear(features)
        if return_features:
            return logits, features
        return logits


def resnet18(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-18, blocks [2, 2, 2, 2] (§1.2)."""
    return ResNet((2, 2, 2, 2), num_classes, in_channels)


def resnet34(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-34, blocks [3, 4, 6, 3] (§1.2)."""
    return ResNet((3, 4, 6, 3), num_classes, in_channels)


def resnet50(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-50, Bottleneck blocks [3, 4, 6, 3], feature 2048-d (§18.2)."""
    return ResNet((3, 4, 6, 3), num_classes, in_channels, block=Bottleneck)
