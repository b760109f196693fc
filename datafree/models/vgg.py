"""VGG-11 with BatchNorm, CIFAR variant (METHODS.md §1.3).

Configuration "A" split into five blocks of 3x3 conv (with bias) -> BN -> ReLU,
separated by 2x2 max-pools, then a global average pool (``feat``, D=512) and a
single Linear(512, C). ``pool3`` is applied only to 64-px inputs; for 32-px
inputs it is skipped so block4 still sees a 4x4 map (§1.3).

As in the reference, each block is built without its final ReLU, which is
applied functionally after the block; the net effect is conv-BN-ReLU
everywhere. Sub-module names (``block0..block4``, ``pool0..pool4``,
``classifier``) match the reference state-dict keys.

VGG has no partial forward: ``l`` is accepted for API compatibility and any
``l != 0`` raises ValueError ([CLEAN] rule of §1.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional
from torch import nn

from datafree.models.initialization import init_conv_and_batchnorm

VGG11_BLOCK_WIDTHS: tuple[tuple[int, ...], ...] = ((64,), (128,), (256, 256), (512, 512), (512, 512))
POOL3_INPUT_SIZE = 64  # §1.3: pool3 runs only for inputs of this height


def make_vgg_block(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """conv3x3(bias) -> BN -> ReLU per width, with the block's last ReLU left out (§1.3)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width)]
        layers += [nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """Five-block VGG with BN for 32-px (and 64-px) inputs; ``feature_dim`` = 512."""

    def __init__(self, block_widths: tuple[tuple[int, ...], ...] = VGG11_BLOCK_WIDTHS, num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        if len(block_widths) != 5:
            raise ValueError(f"VGG needs 5 blocks, got {len(block_widths)}")
        blocks = []
        for widths in block_widths:
            blocks.append(make_vgg_block(in_channels, widths))
            in_channels = widths[-1]
        self.block0, self.block1, self.block2, self.block3, self.block4 = blocks
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_channels
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """§1.3 init: conv N(0, sqrt(2/(k*k*C_out))), conv bias 0; BN 1/0; Linear N(0, 0.01), bias 0."""
        init_conv_and_batchnorm(self)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(
        self, x: torch.Tensor, return_features: bool = False, l: int = 0  # noqa: E741 (name fixed by §1.1)
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, C)``, or ``(logits, feat)`` with ``feat`` ``(B, 512)`` (§1.1).

        ``l`` must be 0: VGG does not support partial forward (§1.1, §1.9).
        """
        if l != 0:
            raise ValueError(f"VGG has no partial forward; l must be 0, got l={l}")
        apply_pool3 = x.shape[-2] == POOL3_INPUT_SIZE
        out = self.pool0(functional.relu(self.block0(x)))
        out = self.pool1(functional.relu(self.block1(out)))
        out = self.pool2(functional.relu(self.block2(out)))
        out = functional.relu(self.block3(out))
        if apply_pool3:
            out = self.pool3(out)
        out = functional.relu(self.block4(out))
        features = torch.flatten(self.pool4(out), 1)
        logits = self.classifier(features)
        if return_features:
            return logits, features
        return logits


def vgg11(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-11 with BN (configuration "A"), §1.3."""
    return VGG(VGG11_BLOCK_WIDTHS, num_classes, in_channels)
