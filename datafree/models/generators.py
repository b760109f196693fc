"""Latent-to-image generators G-S, G-L, G-Cu, G-D, the deep body, NAYER's noisy-layer generator, and their
re-initialisations (METHODS.md §1.7, §11.4, §19.3, §20.1).

All of them map ``z`` (``(B, nz)``; Fast's deep generator: ``(B, nz, s0, s0)``) to images in [0, 1]
(sigmoid output; G-D optionally Tanh + affine-free BN) of shape ``(B, C, img_size, img_size)``: a
small feature map, nearest-neighbour x2 upsampling, 3x3 convs with BN and Leaky-ReLU (slope 0.2),
and a final 3x3 conv to the image's channels. BN layers keep the PyTorch defaults (momentum 0.1,
eps 1e-5).

Image sizes (§18.6, §19.3): every generator is built from the image side ``img_size`` alone.
The start map of side ``s0 = img_size / 2**upsamplings`` must be a whole number and at most
:data:`MAX_START_SIZE` (16, the largest start map of any reference: G-S / NAYER at 64 px);
anything else is refused in one line (:class:`ImageSizeError`) that names a size or depth that
works. G-S and NAYER's generator choose their body from the size (:func:`body_for`): the
two-upsampling G-S body up to 64 px, the four-upsampling deep body of Fast / NAYER at ImageNet
(§19.3) above.

Constructors leave PyTorch's default init (what DAFL/ZSKT/DFQ use). Methods
that need the §1.7 init (CMI at every synthesis call, CuDFKD once at
construction) call :func:`reset_generator_init` themselves; NAYER re-creates its
generator with PyTorch's default init drawn from its own RNG stream
(:func:`reset_default_init`, §11.6).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from datafree.errors import UsageError

LEAKY_RELU_SLOPE = 0.2
INIT_STD = 0.02
#: Largest side of the map a latent is projected (or, for Fast's deep generator, drawn) at: 16, the
#: start map of G-S / NAYER at 64 px, the largest any reference uses (§18.6, §19.3). A larger start
#: map means a Linear of hundreds of millions of parameters (G-L at 224 px: 56×56) and is refused.
MAX_START_SIZE = 16
#: Upsamplings of the two bodies G-S and NAYER choose between (:func:`body_for`).
SHALLOW_UPSAMPLINGS, DEEP_UPSAMPLINGS = 2, 4
#: What a refusal of G-L / G-D above 64 px suggests (no reference runs them there, §19.3).
LARGE_IMAGE_HINT = ("; at larger sizes use a method with a deep-body generator (cmi, fast, nayer) or the "
                    "curriculum generator G-Cu with a larger --depth (cudfkd, adadfkd)")


class ImageSizeError(UsageError, ValueError):
    """An image size a generator body cannot reach: one line naming a size or depth that works.

    A :class:`~datafree.errors.UsageError` (the command line prints it and exits 2) and a ValueError."""


def conv_bn_leaky_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """conv3x3 (no bias) -> BN -> LeakyReLU(0.2), the generators' repeated unit (§1.7)."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True),
    ]


def to_rgb(in_channels: int, out_channels: int = 3) -> list[nn.Module]:
    """conv3x3 (with bias) to the image's channels (3; 1 for MNIST), then Sigmoid so pixels lie in [0, 1] (§1.7)."""
    return [nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1), nn.Sigmoid()]


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

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent: ``(nz,)``."""
        return (self.nz,)


def start_size_for(img_size: int, num_upsamplings: int, name: str = "generator", hint: str = "") -> int:
    """Side ``s0 = img_size / 2**num_upsamplings`` of the start map (§18.6, §19.3).

    Raises :class:`ImageSizeError` unless ``s0`` is a whole number no larger than :data:`MAX_START_SIZE`;
    ``hint`` ends the message of a start map that is too large (what to use instead).
    """
    factor = 2**num_upsamplings
    if img_size <= 0 or img_size % factor != 0:
        raise ImageSizeError(f"{name} upsamples {num_upsamplings} times (x{factor}), so the image size must be a "
                             f"positive multiple of {factor}, got {img_size}")
    start = img_size // factor
    if start > MAX_START_SIZE:
        raise ImageSizeError(f"{name} would start from a {start}x{start} map at {img_size} px (more than "
                             f"{MAX_START_SIZE}x{MAX_START_SIZE}, a needlessly huge projection); it supports images "
                             f"up to {MAX_START_SIZE * factor} px{hint}")
    return start


def body_for(img_size: int) -> str:
    """The body G-S and NAYER's generator use at ``img_size`` (§19.3): ``"shallow"`` (the G-S body, two
    upsamplings, s0 = S/4) while S/4 ≤ :data:`MAX_START_SIZE`, i.e. up to 64 px (what CMI, Fast and NAYER
    do at 32 and 64 px); ``"deep"`` (the Fast / NAYER ImageNet body, four upsamplings, s0 = S/16: 14 at
    224 px) above. A rule on the size alone, never on the dataset's name."""
    return "shallow" if img_size <= MAX_START_SIZE * 2**SHALLOW_UPSAMPLINGS else "deep"


def smallest_depth_for(img_size: int) -> int:
    """The smallest G-Cu depth whose start map ``img_size / 2**d`` is whole and at most
    :data:`MAX_START_SIZE` (4 at 224 px, the depth §19.3 names for flat-latent methods); 0 when there is none. Only what a
    refusal suggests: the published depths are larger at small sizes (2 at 32 px, 3 at 64 px)."""
    depth = 1
    while img_size % 2**depth == 0:
        if img_size // 2**depth <= MAX_START_SIZE:
            return depth
        depth += 1
    return 0


def gs_body(ngf: int, out_channels: int = 3) -> list[nn.Module]:
    """The "G-S body", everything of G-S after its Linear (§1.7; shared with NAYER, §11.4).

    BN(2ngf) -> Up -> conv 2ngf->2ngf (no bias) -> BN -> LReLU -> Up -> conv 2ngf->ngf (no bias)
    -> BN -> LReLU -> conv ngf->3 (bias) -> Sigmoid; 223,555 parameters with ngf=64.
    """
    start_channels = 2 * ngf
    layers: list[nn.Module] = [nn.BatchNorm2d(start_channels), nn.Upsample(scale_factor=2, mode="nearest")]
    layers += conv_bn_leaky_relu(start_channels, start_channels)
    layers += [nn.Upsample(scale_factor=2, mode="nearest")]
    layers += conv_bn_leaky_relu(start_channels, ngf)
    layers += to_rgb(ngf, out_channels)
    return layers


def deep_body(ngf: int, in_channels: int, out_channels: int = 3) -> list[nn.Module]:
    """The "deep body" of Fast's and NAYER's ImageNet generators (§19.3), for a start map of
    ``in_channels`` × s0 × s0 (s0 = img_size/16: 14 at 224 px).

    conv in->2ngf (no bias) -> BN -> LReLU (no upsampling), then four × [Up, conv, BN, LReLU] with
    widths 2ngf, ngf, ngf, ngf, then conv ngf->C (bias) -> Sigmoid. No BN before the first conv (as in
    both references). 444,995 parameters with ngf=64, in_channels=128, C=3.
    """
    layers = conv_bn_leaky_relu(in_channels, 2 * ngf)
    for source, target in ((2 * ngf, 2 * ngf), (2 * ngf, ngf), (ngf, ngf), (ngf, ngf)):
        layers += [nn.Upsample(scale_factor=2, mode="nearest")]
        layers += conv_bn_leaky_relu(source, target)
    layers += to_rgb(ngf, out_channels)
    return layers


def projected_body(ngf: int, img_size: int, out_channels: int, name: str) -> tuple[int, list[nn.Module]]:
    """``(s0, layers)`` after the Linear of G-S / NAYER at ``img_size``: the G-S body with s0 = S/4, or
    the deep body with s0 = S/16 (:func:`body_for`); both start from 2ngf channels."""
    if body_for(img_size) == "shallow":
        return start_size_for(img_size, SHALLOW_UPSAMPLINGS, name), gs_body(ngf, out_channels)
    return start_size_for(img_size, DEEP_UPSAMPLINGS, f"{name} (deep body)"), deep_body(ngf, 2 * ngf, out_channels)


class GeneratorS(ProjectedConvGenerator):
    """G-S, the CMI / Fast-Datafree "Generator" (§1.7).

    Linear(nz -> 2*ngf*s0*s0), s0 = img_size/4, then the G-S body (:func:`gs_body`):
    BN(2ngf) -> Up -> conv 2ngf->2ngf -> BN -> LReLU -> Up -> conv 2ngf->ngf -> BN -> LReLU
    -> conv ngf->3 -> Sigmoid. 2,328,899 parameters with nz=256, ngf=64 (32 px).

    Above 64 px (:func:`body_for`) the same Linear feeds the deep body instead, s0 = img_size/16
    (:func:`deep_body`; 6,892,611 parameters at 224 px, nz 256, ngf 64). No reference runs G-S there:
    this is NAYER's ImageNet decoder with a latent input (§19.3).
    """

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, out_channels: int = 3) -> None:
        start_size, layers = projected_body(ngf, img_size, out_channels, "G-S")
        super().__init__(nz, 2 * ngf, start_size, layers)
        self.body = body_for(img_size)


class SpatialLatentGenerator(nn.Module):
    """Fast's ImageNet ``DeepGenerator`` (§19.3): a spatial latent ``z`` of shape ``(B, nz, s0, s0)``,
    s0 = img_size/16 (14 at 224 px), straight into the deep body (:func:`deep_body` with nz input
    channels). The reference's Linear is never used, so it is left out ([CLEAN]). 592,451 parameters
    with nz 256, ngf 64, 3 channels.
    """

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 224, out_channels: int = 3) -> None:
        super().__init__()
        self.nz = nz
        self.start_size = start_size_for(img_size, DEEP_UPSAMPLINGS, "the deep generator")
        self.conv_blocks = nn.Sequential(*deep_body(ngf, nz, out_channels))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent: ``(nz, s0, s0)``."""
        return (self.nz, self.start_size, self.start_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map latents ``(B, nz, s0, s0)`` to images ``(B, C, img_size, img_size)`` in [0, 1]."""
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"expected latents of shape (B, {', '.join(map(str, self.latent_shape))}), "
                             f"got {tuple(z.shape)}")
        return self.conv_blocks(z)


def fast_generator(nz: int, ngf: int, img_size: int, out_channels: int = 3) -> nn.Module:
    """Fast's generator at ``img_size`` (:func:`body_for`): G-S up to 64 px (§10.3), the spatial-latent
    deep generator above (§19.3). Both expose ``latent_shape``."""
    if body_for(img_size) == "shallow":
        return GeneratorS(nz=nz, ngf=ngf, img_size=img_size, out_channels=out_channels)
    return SpatialLatentGenerator(nz=nz, ngf=ngf, img_size=img_size, out_channels=out_channels)


class NoisyLayers(nn.Module):
    """NAYER's ``nle`` noisy layers ``NL_c = Linear(D -> hidden)``, applied chunk-wise (§11.4).

    Rows ``[c·chunk, (c+1)·chunk)`` of the input go through layer ``c`` (the last chunk may be
    shorter). The ``nle`` layers are stored as one weight ``(nle, hidden, D)`` and one bias
    ``(nle, hidden)`` and applied with a single batched matmul; this is the same function and the
    same parameter count as ``nle`` separate ``nn.Linear`` modules, without ``nle`` kernel launches.
    """

    def __init__(self, count: int, in_features: int, out_features: int) -> None:
        super().__init__()
        if count < 1 or in_features < 1 or out_features < 1:
            raise ValueError(f"noisy layers need positive sizes, got count={count}, "
                             f"in_features={in_features}, out_features={out_features}")
        self.count, self.in_features, self.out_features = count, in_features, out_features
        self.weight = nn.Parameter(torch.empty(count, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(count, out_features))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """PyTorch's ``nn.Linear`` default, layer by layer: kaiming-uniform(a=√5) weights (bound
        1/√D) and biases uniform in ±1/√D."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            for layer in range(self.count):
                nn.init.kaiming_uniform_(self.weight[layer], a=math.sqrt(5), generator=generator)
                nn.init.uniform_(self.bias[layer], -bound, bound, generator=generator)

    def re_init(self, generator: torch.Generator | None = None) -> None:
        """NAYER's per-batch re-initialisation (``re_init_le``, §11.4): weights ~ N(0, 1), biases 0."""
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0, generator=generator)
            self.bias.zero_()

    def forward(self, inputs: torch.Tensor, chunk: int) -> torch.Tensor:
        """``(N, D) -> (N, hidden)``: rows ``[c·chunk, (c+1)·chunk)`` through layer ``c``."""
        rows = inputs.shape[0]
        chunks = -(-rows // chunk)
        if chunks > self.count:
            raise ValueError(f"{rows} rows need {chunks} noisy layers of {chunk} rows, but there are {self.count}")
        padded = F.pad(inputs, (0, 0, 0, chunks * chunk - rows)).view(chunks, chunk, self.in_features)
        outputs = torch.baddbmm(self.bias[:chunks, None, :], padded, self.weight[:chunks].transpose(1, 2))
        return outputs.reshape(chunks * chunk, self.out_features)[:rows]

    def extra_repr(self) -> str:
        return f"count={self.count}, in_features={self.in_features}, out_features={self.out_features}"


class NoisyLayerGenerator(nn.Module):
    """NAYER's ``NLGenerator``: label embedding -> BN1d -> noisy layer -> Linear -> G-S body (§11.4).

    ``embeddings`` (C × D) is a constant, non-persistent buffer (the label-text embeddings, or
    an offline substitute, §11.3). For labels ``y`` (length ``N``)::

        h = BatchNorm1d(D)(E[y])                      # always batch statistics
        u[rows c·C..(c+1)·C) = NL_c(h[rows])          # nle = ⌈batch_size / C⌉ noisy layers D -> hidden
        image = G-S body(Linear(hidden -> 2·ngf·s0²)(u) reshaped to 2ngf × s0 × s0)

    With balanced labels (every C consecutive rows hold each class once, §11.4) noisy layer
    ``c`` makes one image per class. Parameters with ngf 64, hidden 1000, batch 400, D 512:
    28,944,771 (C = 10) and 10,476,771 (C = 100). The BN1d keeps no running statistics: NAYER
    only ever uses it in training mode, so this changes nothing but makes ``eval()`` harmless.

    Above 64 px the decoder is NAYER's ``NLDeepGenerator`` (:func:`body_for`, §19.3): s0 = img_size/16
    and the deep body; 7,024,963 parameters at 224 px with ngf 64, hidden 256, D 512, C 1000, batch 200.
    """

    def __init__(self, embeddings: torch.Tensor, hidden: int = 1000, ngf: int = 64, img_size: int = 32,
                 batch_size: int = 400, out_channels: int = 3) -> None:
        super().__init__()
        if embeddings.dim() != 2 or embeddings.shape[0] < 1 or embeddings.shape[1] < 1:
            raise ValueError(f"embeddings must be a non-empty C x D matrix, got shape {tuple(embeddings.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.num_classes, self.embedding_dim = embeddings.shape
        self.hidden = hidden
        self.register_buffer("embeddings", embeddings.detach().float().clone(), persistent=False)
        self.embedding_norm = nn.BatchNorm1d(self.embedding_dim, track_running_stats=False)
        self.noisy_layers = NoisyLayers(-(-batch_size // self.num_classes), self.embedding_dim, hidden)
        start_size, layers = projected_body(ngf, img_size, out_channels, "NAYER's generator")
        self.decoder = ProjectedConvGenerator(hidden, 2 * ngf, start_size, layers)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, img_size, img_size)`` in [0, 1] for class labels ``(N,)``."""
        normalised = self.embedding_norm(self.embeddings[labels])
        return self.decoder(self.noisy_layers(normalised, chunk=self.num_classes))

    def re_init_noisy_layers(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise the noisy layers only (weights ~ N(0, 1), biases 0), before every batch (§11.4)."""
        self.noisy_layers.re_init(generator)

    def persistent_parameters(self) -> list[nn.Parameter]:
        """The parameters that survive a batch: everything except the noisy layers."""
        noisy = {id(parameter) for parameter in self.noisy_layers.parameters()}
        return [parameter for parameter in self.parameters() if id(parameter) not in noisy]


class LargeGenerator(ProjectedConvGenerator):
    """G-L, the DAFL / ZSKT / DFQ generator (§1.7).

    Linear(nz -> 4*ngf*s0*s0), s0 = img_size/4 -> BN(4ngf) -> Up -> conv 4ngf->2ngf
    -> BN -> LReLU -> Up -> conv 2ngf->ngf -> BN -> LReLU -> conv ngf->3 -> Sigmoid.
    4,581,955 parameters with nz=256, 8,776,259 with nz=512 (ngf=64).
    """

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, out_channels: int = 3) -> None:
        start_channels = 4 * ngf
        layers: list[nn.Module] = [nn.BatchNorm2d(start_channels), nn.Upsample(scale_factor=2, mode="nearest")]
        layers += conv_bn_leaky_relu(start_channels, 2 * ngf)
        layers += [nn.Upsample(scale_factor=2, mode="nearest")]
        layers += conv_bn_leaky_relu(2 * ngf, ngf)
        layers += to_rgb(ngf, out_channels)
        super().__init__(nz, start_channels, start_size_for(img_size, SHALLOW_UPSAMPLINGS, "G-L", LARGE_IMAGE_HINT), layers)


class CurriculumGenerator(ProjectedConvGenerator):
    """G-Cu, the CuDFKD DCGAN-style generator of depth ``d`` (§1.7).

    s0 = img_size / 2**d, c0 = ngf * 2**d. Linear(nz -> c0*s0*s0) -> BN(c0) -> Up;
    then d-1 times [conv c->c/2, BN, LReLU, Up]; then conv 2ngf->ngf, BN, LReLU,
    conv ngf->3, Sigmoid. d=2, 32 px, nz=512 equals G-L with nz=512 layer for
    layer (8,776,259 params); d=3, 64 px, nz=1024 has 35,139,139. The reference's
    unused ``cond``/``type``/``widen_factor`` arguments are dropped ([CLEAN]).
    """

    def __init__(self, nz: int = 512, ngf: int = 64, depth: int = 2, img_size: int = 32, out_channels: int = 3) -> None:
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
        layers += to_rgb(ngf, out_channels)
        super().__init__(nz, start_channels, curriculum_start_size(img_size, depth), layers)
        self.depth = depth


def curriculum_start_size(img_size: int, depth: int) -> int:
    """G-Cu's start map ``img_size / 2**depth`` (§1.7, §18.6); a refusal names the depth that works."""
    try:
        return start_size_for(img_size, depth, f"G-Cu with --depth {depth}")
    except ImageSizeError as error:
        suggestion = smallest_depth_for(img_size)
        hint = f"; pass --depth {suggestion} or more" if suggestion and suggestion > depth else ""
        raise ImageSizeError(f"{error}{hint}") from None


class AffineFreeBatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d(affine=False)``: the DAFL / DFAD output layer that normalises each image channel
    of a generated batch to zero mean and unit variance (§20.1)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=False)


#: Output heads of :class:`ReferenceGenerator` (§20.1): ``sigmoid`` gives pixels in [0, 1] that the
#: dataset normaliser maps into model space; ``normalized`` (Tanh, then an affine-free BN) gives
#: images already in model space, fed to the classifiers without the normaliser.
GENERATOR_OUTPUTS = ("sigmoid", "normalized")


class ReferenceGenerator(ProjectedConvGenerator):
    """G-D, the generator of the DAFL and DFAD reference code (§20.1, §20.2), for any channel count.

    Linear(nz -> 2ngf·s0²), s0 = img_size/4 -> BN(2ngf) -> Up -> conv 2ngf->2ngf (bias) -> BN(eps)
    -> LReLU(0.2) -> Up -> conv 2ngf->ngf (bias) -> BN(eps) -> LReLU(0.2) -> conv ngf->C (bias) ->
    output. ``bn_eps`` is the eps of the two inner BNs: 0.8 in DAFL's code (its ``BatchNorm2d(c,
    0.8)`` passes 0.8 as eps), PyTorch's 1e-5 in DFAD's. ``output`` is ``normalized`` (Tanh, then
    ``BatchNorm2d(C, affine=False)``, the references' head) or ``sigmoid`` (pixels in [0, 1]).
    PyTorch default init. 1,049,985 parameters with nz 100, ngf 64, 32 px, C 1 (normalized head).
    """

    def __init__(self, nz: int = 100, ngf: int = 64, img_size: int = 32, out_channels: int = 1,
                 bn_eps: float = 1e-5, output: str = "normalized") -> None:
        if output not in GENERATOR_OUTPUTS:
            raise ValueError(f"output must be one of {GENERATOR_OUTPUTS}, got {output!r}")
        start_channels = 2 * ngf
        layers: list[nn.Module] = [
            nn.BatchNorm2d(start_channels), nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(start_channels, start_channels, 3, stride=1, padding=1),
            nn.BatchNorm2d(start_channels, eps=bn_eps), nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(start_channels, ngf, 3, stride=1, padding=1),
            nn.BatchNorm2d(ngf, eps=bn_eps), nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True),
            nn.Conv2d(ngf, out_channels, 3, stride=1, padding=1)]
        layers += [nn.Tanh(), AffineFreeBatchNorm(out_channels)] if output == "normalized" else [nn.Sigmoid()]
        super().__init__(nz, start_channels, start_size_for(img_size, SHALLOW_UPSAMPLINGS, "G-D", LARGE_IMAGE_HINT), layers)
        self.output = output


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


def reset_default_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Re-initialise ``module`` in place exactly as its constructors did (PyTorch's defaults, §11.6).

    Linear and conv weights: kaiming-uniform with a = √5, biases uniform in ±1/√fan_in (what
    ``reset_parameters`` of ``nn.Linear`` / ``nn.Conv2d`` draws); BatchNorm weights 1, biases 0,
    running statistics reset; :class:`NoisyLayers` layer by layer like ``nn.Linear``. With
    ``generator`` the draws come from that ``torch.Generator`` instead of the global RNG, in
    module order (weight, then bias). The modules and parameters stay the same objects, so
    optimizers, references and a DDP wrapper survive.
    """
    with torch.no_grad():
        for submodule in module.modules():
            if isinstance(submodule, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_uniform_(submodule.weight, a=math.sqrt(5), generator=generator)
                if submodule.bias is not None:
                    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(submodule.weight)
                    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(submodule.bias, -bound, bound, generator=generator)
            elif isinstance(submodule, NoisyLayers):
                submodule.reset_parameters(generator=generator)
            elif isinstance(submodule, nn.modules.batchnorm._BatchNorm):
                submodule.reset_parameters()
