"""Wide-ResNet WRN-d-k, ZSKT variant (METHODS.md §1.4).

Channels ``[16, 16k, 32k, 64k]`` with ``n = (d - 4) / 6`` pre-activation blocks
per group; head BN -> ReLU -> global average pool (``feat``, D = 64k) -> Linear.
Init (§1.4): conv N(0, sqrt(2/(k*k*C_out))), BN 1/0, Linear bias 0 (weight left
at PyTorch's default).

Sub-module names (``conv1``, ``block1..block3`` each holding ``layer``, ``bn1``,
``fc``; per block ``bn1``, ``conv1``, ``bn2``, ``conv2``, ``convShortcut``)
follow the reference so its state-dict keys load without renaming; that is why
``convShortcut`` keeps the reference's camel case.

``forward(x, return_features=False, l=0)``: §1.1 interface plus the §1.9
partial forward (``l`` = 1 takes block1's output, 2 takes block2's output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional
from torch import nn

from datafree.models.initialization import init_conv_and_batchnorm

MAX_PARTIAL_DEPTH = 2  # §1.9: l in 0..2


class PreActivationBlock(nn.Module):
    """ZSKT pre-activation block (§1.4).

    ``a = ReLU(BN1(x))``; branch = conv3x3(stride) -> BN2 -> ReLU -> Dropout ->
    conv3x3. The shortcut is the raw ``x`` when the width is unchanged, else a
    strided conv1x1 applied to ``a`` (not to ``x``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout_rate)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.same_width = in_channels == out_channels
        self.convShortcut: nn.Conv2d | None = (  # noqa: N815 (reference state-dict key)
            None
            if self.same_width
            else nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = functional.relu(self.bn1(x))
        branch = functional.relu(self.bn2(self.conv1(activated)))
        branch = self.conv2(self.dropout(branch))
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return shortcut + branch


class WideResNetGroup(nn.Module):
    """``num_blocks`` blocks; the first changes width and stride (§1.4)."""

    def __init__(
        self, num_blocks: int, in_channels: int, out_channels: int, stride: int, dropout_rate: float = 0.0
    ) -> None:
        super().__init__()
        blocks = [PreActivationBlock(in_channels, out_channels, stride, dropout_rate)]
        blocks += [PreActivationBlock(out_channels, out_channels, 1, dropout_rate) for _ in range(num_blocks - 1)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen_factor for 32-px inputs; ``feature_dim`` = 64 * widen_factor (§1.4)."""

    def __init__(self, depth: int, num_classes: int = 10, widen_factor: int = 1, dropout_rate: float = 0.0,
                 in_channels: int = 3) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1, got {depth}")
        blocks_per_group = (depth - 4) // 6
        channels = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.feature_dim = channels[3]
        self.conv1 = nn.Conv2d(in_channels, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = WideResNetGroup(blocks_per_group, channels[0], channels[1], 1, dropout_rate)
        self.block2 = WideResNetGroup(blocks_per_group, channels[1], channels[2], 2, dropout_rate)
        self.block3 = WideResNetGroup(blocks_per_group, channels[2], channels[3], 2, dropout_rate)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.fc = nn.Linear(channels[3], num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """§1.4 init: conv N(0, sqrt(2/(k*k*C_out))); BN weight 1, bias 0; Linear bias 0 (weight default)."""
        init_conv_and_batchnorm(self)
        nn.init.zeros_(self.fc.bias)

    def forward(
        self, x: torch.Tensor, return_features: bool = False, l: int = 0  # noqa: E741 (name fixed by §1.1)
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, C)``, or ``(logits, feat)`` with ``feat`` ``(B, 64k)`` (§1.1).

        ``l`` (§1.9): 0 takes an image, 1 takes block1's output (16k x 32 x 32),
        2 takes block2's output (32k x 16 x 16). Raises ValueError outside 0..2.
        """
        if not 0 <= l <= MAX_PARTIAL_DEPTH:
            raise ValueError(f"WideResNet partial forward supports l in 0..{MAX_PARTIAL_DEPTH}, got l={l}")
        out = x
        if l == 0:
            out = self.conv1(out)
        for group in (self.block1, self.block2, self.block3)[l:]:
            out = group(out)
        out = functional.relu(self.bn1(out))
        features = torch.flatten(functional.adaptive_avg_pool2d(out, 1), 1)
        logits = self.fc(features)
        if return_features:
            return logits, features
        return logits


def wrn16_1(num_classes: int = 10, dropout_rate: float = 0.0, in_channels: int = 3) -> WideResNet:
    """WRN-16-1 (§1.4)."""
    return WideResNet(16, num_classes, 1, dropout_rate, in_channels)


def wrn16_2(num_classes: int = 10, dropout_rate: float = 0.0, in_channels: int = 3) -> WideResNet:
    """WRN-16-2 (§1.4)."""
    return WideResNet(16, num_classes, 2, dropout_rate, in_channels)


def wrn40_1(num_classes: int = 10, dropout_rate: float = 0.0, in_channels: int = 3) -> WideResNet:
    """WRN-40-1 (§1.4)."""
    return WideResNet(40, num_classes, 1, dropout_rate, in_channels)


def wrn40_2(num_classes: int = 10, dropout_rate: float = 0.0, in_channels: int = 3) -> WideResNet:
    """WRN-40-2 (§1.4)."""
    return WideResNet(40, num_classes, 2, dropout_rate, in_channels)
