"""PRE-DFKD's networks (METHODS.md §16.3): the novel generator G_n, and the VAE memory (the memory
generator G_m, its decoder, and the encoder E).

G_n and G_m are G-D (:class:`~datafree.models.generators.ReferenceGenerator`, normalised output:
Tanh then an affine-free BN) with BN eps 0.8 in [REF] (§16.8 item 2) and weights drawn
U(−0.08, 0.08), biases 0; G_n carries spectral normalisation on its three convolutions, G_m does
not. At nz 1000, ngf 64, 32 px, 3 channels each has 8,423,939 parameters and E 4,321,872.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from datafree.models.generators import LEAKY_RELU_SLOPE, ReferenceGenerator

#: Bound of the uniform init of every conv / linear weight of the three networks (§16.3).
UNIFORM_INIT_BOUND = 0.08


def uniform_init(module: nn.Module, bound: float = UNIFORM_INIT_BOUND) -> nn.Module:
    """Conv and Linear weights ~ U(−bound, bound), biases 0; BN layers keep PyTorch's init (§16.3).
    Draws from the global RNG, as every constructor does (the run seeds it first)."""
    with torch.no_grad():
        for submodule in module.modules():
            if isinstance(submodule, (nn.Conv2d, nn.Linear)):
                submodule.weight.uniform_(-bound, bound)
                if submodule.bias is not None:
                    submodule.bias.zero_()
    return module


def novel_generator(nz: int = 1000, ngf: int = 64, img_size: int = 32, out_channels: int = 3,
                    bn_eps: float = 0.8, spectral: bool = True) -> ReferenceGenerator:
    """G_n (``spectral=True``: spectral norm on the three convolutions) or G_m (``spectral=False``),
    uniform init (§16.3). The init precedes the spectral norm: the reference initialises after
    attaching it but writes through the storage ``weight`` shares with the original weight, so the
    original weight is what it draws (inferred, §16.3)."""
    generator = uniform_init(ReferenceGenerator(nz=nz, ngf=ngf, img_size=img_size, out_channels=out_channels,
                                                bn_eps=bn_eps, output="normalized"))
    if spectral:
        for index, layer in enumerate(generator.conv_blocks):
            if isinstance(layer, nn.Conv2d):
                generator.conv_blocks[index] = nn.utils.parametrizations.spectral_norm(layer)
    return generator


class Encoder(nn.Module):
    """E (§16.3): the VAE encoder, images (model space) -> ``(z, μ, log σ²)``.

    x -> L2-normalised along dim 2 (image height, the [REF] quirk, §16.8 item 5) -> conv 3x3 C->64,
    BN(64, eps), LReLU(0.2) -> conv 3x3 64->128, BN(128, eps), LReLU(0.2) -> nearest ×0.5 -> conv
    3x3 stride 2 128->128, BN(128) -> nearest ×0.5 -> flatten (128·(s/8)²) -> two Linear to ``nz``
    (μ and log σ²). ``z = μ + exp(½ log σ²)·ε`` with ``ε`` given by the caller (its RNG stream).
    """

    def __init__(self, nz: int = 1000, img_size: int = 32, in_channels: int = 3, bn_eps: float = 0.8) -> None:
        super().__init__()
        if img_size <= 0 or img_size % 8:
            raise ValueError(f"img_size must be a positive multiple of 8, got {img_size}")
        self.nz = nz
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stride=1, padding=1), nn.BatchNorm2d(64, eps=bn_eps),
            nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True),
            nn.Conv2d(64, 128, 3, stride=1, padding=1), nn.BatchNorm2d(128, eps=bn_eps),
            nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True),
            nn.Upsample(scale_factor=0.5, mode="nearest"),
            nn.Conv2d(128, 128, 3, stride=2, padding=1), nn.BatchNorm2d(128),
            nn.Upsample(scale_factor=0.5, mode="nearest"))
        flat = 128 * (img_size // 8) ** 2
        self.mean = nn.Linear(flat, nz)
        self.log_variance = nn.Linear(flat, nz)
        uniform_init(self)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ²)``, each ``(B, nz)``."""
        hidden = self.features(F.normalize(images, p=2, dim=2)).flatten(1)
        return self.mean(hidden), self.log_variance(hidden)

    def forward(self, images: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z, μ, log σ²)`` with the reparameterised ``z = μ + exp(½ log σ²)·noise``."""
        mean, log_variance = self.encode(images)
        return mean + torch.exp(0.5 * log_variance) * noise, mean, log_variance
