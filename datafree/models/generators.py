"""Latent-to-image generators G-S, G-L and G-Cu, and their re-initialisation (METHODS.md §1.7).

All three map ``z`` of shape ``(B, nz)`` to images in [0, 1] (sigmoid output)
of shape ``(B, 3, img_size, img_size)``: a Linear projection reshaped to a
small feature map, nearest-neighbour x2 upsampling, 3x3 convs with BN and
Leaky-ReLU (slope 0.2), and a final 3x3 conv to 3 channels. BN layers keep the
PyTorch defaults (momentum 0.1, eps 1e-5).

Constructors leave PyTorch's default init (what DAFL/ZSKT/DFQ use). Methods
that need the §1.7 init (CMI at every synthesis call, CuDFKD once at
construction) call :func:`reset_generator_init` themselves.
"""

from __future__ import annotations

import torch
from torch import nn

LEAKY_RELU_SLOPE = 0.2
INIT_STD = 0.02


def conv_bn_leaky_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """conv3x3 (no bias) -> BN -> LeakyReLU(0.2), the generators' repeated unit (§1.7)."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True),
    ]


def to_rgb(in_channels: int) -> list[nn.Module]:
    """conv3x3 (with bias) to 3 channels, then Sigmoid so pixels lie in [0, 1] (§1.7)."""
    return [nn.Conv2d(in_channels, 3, kernel_size=3, stride=1, padding=1), nn.Sigmoid()]


class ProjectedConvGenerator(nn.Module):
    """Shared skeleton: Linear(nz -> c0*s0*s0) -> reshape (c0, s0, s0) -> ``conv_blocks``.

    Subclasses only decide ``c0``, ``s0`` and the layers in ``conv_blocks``.
    """

    def __init__(self, nz: int, start_channels: int, start_size: int, conv_blocks: list[nn.Module]) -> None:
        super().__init__()
        self.nz = nz
        self.start_channels = start_channels
        self.start_size = start_size
        self.linear = nn.Linear(nz, start_channels * start_size * start_size)
        self.conv_blocks = nn.Sequential(*conv_blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map latents ``(B, nz)`` to images ``(B, 3, img_size, img_size)`` in [0, 1]."""
        if z.dim() != 2 or z.shape[1] != self.nz:
            raise ValueError(f"expected latents of shape (B, {self.nz}), got {tuple(z.shape)}")
        projected = self.linear(z).view(z.shape[0], self.start_channels, self.start_size, self.start_size)
        return self.conv_blocks(projected)


def start_size_for(img_size: int, num_upsamplings: int) -> int:
    """Side of the projected map, ``img_size / 2**num_upsamplings``; raises if not exact."""
    factor = 2**num_upsamplings
    if img_size <= 0 or img_size % factor != 0:
        raise ValueError(f"img_size must be a positive multiple of {factor}, got {img_size}")
    return img_size // factor


class GeneratorS(ProjectedConvGenerator):
    """G-S, the CMI / Fast-Datafree "Generator" (§1.7).

    Linear(nz -> 2*ngf*s0*s0), s0 = img_size/4 -> BN(2ngf) -> Up -> conv 2ngf->2ngf
    -> BN -> LReLU -> Up -> conv 2ngf->ngf -> BN -> LReLU -> conv ngf->3 -> Sigmoid.
    2,328,899 parameters with nz=256, ngf=64.
    """

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32) -> None:
        start_channels = 2 * ngf
        layers: list[nn.Module] = [nn.BatchNorm2d(start_channels), nn.Upsample(scale_factor=2, mode="nearest")]
        layers += conv_bn_leaky_relu(start_channels, start_channels)
        layers += [nn.Upsample(scale_factor=2, mode="nearest")]
        layers += conv_bn_leaky_relu(start_channels, ngf)
        layers += to_rgb(ngf)
        super().__init__(nz, start_channels, start_size_for(img_size, 2), layers)


class LargeGenerator(ProjectedConvGenerator):
    """G-L, the DAFL / ZSKT / DFQ generator (§1.7).

    Linear(nz -> 4*ngf*s0*s0), s0 = img_size/4 -> BN(4ngf) -> Up -> conv 4ngf->2ngf
    -> BN -> LReLU -> Up -> conv 2ngf->ngf -> BN -> LReLU -> conv ngf->3 -> Sigmoid.
    4,581,955 parameters with nz=256, 8,776,259 with nz=512 (ngf=64).
    """

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32) -> None:
        start_channels = 4 * ngf
        layers: list[nn.Module] = [nn.BatchNorm2d(start_channels), nn.Upsample(scale_factor=2, mode="nearest")]
        layers += conv_bn_leaky_relu(start_channels, 2 * ngf)
        layers += [nn.Upsample(scale_factor=2, mode="nearest")]
        layers += conv_bn_leaky_relu(2 * ngf, ngf)
        layers += to_rgb(ngf)
        super().__init__(nz, start_channels, start_size_for(img_size, 2), layers)


class CurriculumGenerator(ProjectedConvGenerator):
    """G-Cu, the CuDFKD DCGAN-style generator of depth ``d`` (§1.7).

    s0 = img_size / 2**d, c0 = ngf * 2**d. Linear(nz -> c0*s0*s0) -> BN(c0) -> Up;
    then d-1 times [conv c->c/2, BN, LReLU, Up]; then conv 2ngf->ngf, BN, LReLU,
    conv ngf->3, Sigmoid. d=2, 32 px, nz=512 equals G-L with nz=512 layer for
    layer (8,776,259 params); d=3, 64 px, nz=1024 has 35,139,139. The reference's
    unused ``cond``/``type``/``widen_factor`` arguments are dropped ([CLEAN]).
    """

    def __init__(self, nz: int = 512, ngf: int = 64, depth: int = 2, img_size: int = 32) -> None:
        if depth < 1:
            raise ValueError(f"CurriculumGenerator depth must be >= 1, got {depth}")
        start_channels = ngf * 2**depth
        layers: list[nn.Module] = [nn.BatchNorm2d(start_channels), nn.Upsample(scale_factor=2, mode="nearest")]
        channels = start_channels
        for _ in range(depth - 1):
            layers += conv_bn_leaky_relu(channels, channels // 2)
            layers += [nn.Upsample(scale_factor=2, mode="nearest")]
            channels //= 2
        layers += conv_bn_leaky_relu(channels, ngf)
        layers += to_rgb(ngf)
        super().__init__(nz, start_channels, start_size_for(img_size, depth), layers)
        self.depth = depth


def reset_generator_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Re-initialise a generator in place with the CMI / CuDFKD scheme (§1.7).

    Conv and Linear weights ~ N(0, 0.02), their biases 0; BatchNorm weights
    ~ N(1, 0.02), biases 0. Running BN statistics are left untouched, as in the
    reference. Pass ``generator`` (a ``torch.Generator`` on the parameters'
    device) to make the draw reproducible independently of the global RNG.
    """
    for submodule in module.modules():
        if isinstance(submodule, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(submodule.weight, 0.0, INIT_STD, generator=generator)
            if submodule.bias is not None:
                nn.init.zeros_(submodule.bias)
        elif isinstance(submodule, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if submodule.weight is not None:
                nn.init.normal_(submodule.weight, 1.0, INIT_STD, generator=generator)
            if submodule.bias is not None:
                nn.init.zeros_(submodule.bias)
