"""The convolution / BatchNorm initialisation shared by VGG (§1.3) and WRN (§1.4)."""
from __future__ import annotations

import math

from torch import nn


def init_conv_and_batchnorm(model: nn.Module) -> None:
    """Every Conv2d: weight N(0, sqrt(2 / (k·k·C_out))), bias 0; every BatchNorm2d: γ = 1, β = 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
