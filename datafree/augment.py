"""Batched image augmentation on the input's device (METHODS.md §2.1, §4.4, §4.5, §7 item 27).

Why this module exists: the references augment one PIL image at a time in DataLoader workers
(train transform, §2.1) or call ``kornia`` for CMI's two views (§4.5). Here every augmentation
is a handful of tensor operations over the whole batch, with **per-sample** random parameters
drawn in one call, so it runs on the GPU next to the model and, for float input, stays
differentiable (CMI back-propagates through both views into the generator).

Randomness comes only from the optional ``generator`` argument. A ``torch.Generator`` lives on
one device; random numbers are drawn on the generator's device and then moved to the images'
device, so a CPU generator can drive CUDA augmentation and vice versa. The order of the draws
inside each function is fixed, so a seeded generator reproduces the same augmentation.

No function here synchronises with the host (no ``.item()``): random parameters stay tensors
and are applied through index arithmetic (``gather`` / ``index_select``) or ``grid_sample``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "jitter_flip",
    "random_crop_flip",
    "random_integers",
    "random_permutation",
    "random_resized_crop_flip",
    "random_uniform",
    "to_unit_float",
]


# ----------------------------------------------------------------------------- random helpers
def _sampling_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Where random numbers must be drawn: on the generator's device, else on ``device``."""
    return generator.device if generator is not None else device


def random_uniform(shape: tuple[int, ...], device: torch.device,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform [0, 1) float32 samples of ``shape``, drawn with ``generator``, returned on ``device``."""
    values = torch.rand(shape, generator=generator, device=_sampling_device(generator, device))
    return values.to(device)


def random_integers(low: int, high: int, shape: tuple[int, ...], device: torch.device,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Integers uniform in ``[low, high)`` (int64), drawn with ``generator``, returned on ``device``."""
    values = torch.randint(low, high, shape, generator=generator, device=_sampling_device(generator, device))
    return values.to(device)


def random_permutation(count: int, device: torch.device,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random permutation of ``range(count)`` (int64), returned on ``device``."""
    values = torch.randperm(count, generator=generator, device=_sampling_device(generator, device))
    return values.to(device)


# ----------------------------------------------------------------------------- conversions
def to_unit_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images in [0, 255] -> floating images in [0, 1] (``ToTensor`` of §2.1).

    Refuses non-uint8 input so that an image already in [0, 1] is never divided twice.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"to_unit_float expects uint8 images, got {images.dtype}")
    return images.to(dtype) / 255.0


def _check_batch(images: torch.Tensor, name: str) -> None:
    """Raise ValueError unless ``images`` is a 4-D ``(N, C, H, W)`` batch."""
    if images.dim() != 4:
        raise ValueError(f"{name} expects a (N, C, H, W) batch, got shape {tuple(images.shape)}")


def _check_probability(flip_prob: float) -> None:
    """Raise ValueError unless ``flip_prob`` is a probability."""
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must lie in [0, 1], got {flip_prob}")


# ----------------------------------------------------------------------------- §2.1 / §4.5 global view
def random_crop_flip(images: torch.Tensor, padding: int = 4, flip_prob: float = 0.5,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """RandomCrop(H×W, zero padding ``padding``) then RandomHorizontalFlip(``flip_prob``), per sample.

    The train transform of §2.1 and CMI's global view (§4.5). Sample ``n`` gets its own crop
    offset ``(oy, ox)`` in ``[0, 2·padding]²`` of the zero-padded image and its own flip. The
    padded image is never materialised: output pixel ``(i, j)`` reads source row
    ``oy + i - padding`` and column ``ox + j' - padding`` (``j' = W-1-j`` when flipped) and is 0
    where that lies outside the image. Works for uint8 and float input (same dtype out) and is
    differentiable for float input (``gather`` + ``where``).

    Random draws, in order: offsets ``(N, 2)`` integers, then flip uniforms ``(N,)``.
    """
    _check_batch(images, "random_crop_flip")
    _check_probability(flip_prob)
    if padding < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    count, channels, height, width = images.shape
    device = images.device
    offsets = random_integers(0, 2 * padding + 1, (count, 2), device, generator)
    flips = random_uniform((count,), device, generator) < flip_prob

    rows = torch.arange(height, device=device)
    columns = torch.arange(width, device=device)
    source_rows = offsets[:, 0:1] + rows - padding                                    # (N, H)
    read_columns = torch.where(flips[:, None], (width - 1) - columns, columns)          # (N, W)
    source_columns = offsets[:, 1:2] + read_columns - padding                         # (N, W)
    row_inside = (source_rows >= 0) & (source_rows < height)
    column_inside = (source_columns >= 0) & (source_columns < width)

    row_index = source_rows.clamp(0, height - 1).view(count, 1, height, 1).expand(count, channels, height, width)
    column_index = source_columns.clamp(0, width - 1).view(count, 1, 1, width).expand(count, channels, height, width)
    picked = images.gather(2, row_index).gather(3, column_index)
    inside = (row_inside[:, :, None] & column_inside[:, None, :])[:, None]           # (N, 1, H, W)
    return torch.where(inside, picked, torch.zeros((), dtype=images.dtype, device=device))


# ----------------------------------------------------------------------------- §4.5 local view
def _resized_crop_boxes(count: int, height: int, width: int, scale: tuple[float, float],
                        ratio: tuple[float, float], attempts: int, device: torch.device,
                        generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """Per-sample crop boxes (top, left, box_height, box_width) as float tensors ``(N,)``.

    torchvision ``RandomResizedCrop.get_params`` semantics, vectorised: ``attempts`` candidate
    boxes per sample (area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``,
    sides rounded half-to-even); the first candidate that fits is used, placed uniformly; a
    sample with no fitting candidate gets the central crop with the aspect ratio clamped into
    ``ratio`` (the whole image for a square input whose ``ratio`` contains 1).

    Random draws, in order: area fractions ``(N, attempts)``, log ratios ``(N, attempts)``,
    top and left uniforms ``(N, 2)``.
    """
    area = float(height * width)
    fractions = scale[0] + (scale[1] - scale[0]) * random_uniform((count, attempts), device, generator)
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspects = torch.exp(log_low + (log_high - log_low) * random_uniform((count, attempts), device, generator))
    target_areas = area * fractions
    box_widths = torch.round(torch.sqrt(target_areas * aspects))
    box_heights = torch.round(torch.sqrt(target_areas / aspects))
    fits = (box_widths > 0) & (box_widths <= width) & (box_heights > 0) & (box_heights <= height)

    first_fit = torch.argmax(fits.to(torch.uint8), dim=1, keepdim=True)              # first True (0 if none)
    any_fit = fits.any(dim=1)
    box_width = box_widths.gather(1, first_fit).squeeze(1)
    box_height = box_heights.gather(1, first_fit).squeeze(1)

    # Fallback (torchvision): central crop, aspect ratio clamped into [ratio[0], ratio[1]].
    input_ratio = width / height
    if input_ratio < ratio[0]:
        fallback_width, fallback_height = width, int(round(width / ratio[0]))
    elif input_ratio > ratio[1]:
        fallback_width, fallback_height = int(round(height * ratio[1])), height
    else:
        fallback_width, fallback_height = width, height
    box_width = torch.where(any_fit, box_width, torch.full_like(box_width, fallback_width))
    box_height = torch.where(any_fit, box_height, torch.full_like(box_height, fallback_height))

    positions = random_uniform((count, 2), device, generator)
    top = torch.floor(positions[:, 0] * (height - box_height + 1)).clamp(max=height - box_height)
    left = torch.floor(positions[:, 1] * (width - box_width + 1)).clamp(max=width - box_width)
    top = torch.where(any_fit, top, torch.full_like(top, (height - fallback_height) // 2))
    left = torch.where(any_fit, left, torch.full_like(left, (width - fallback_width) // 2))
    return top, left, box_height, box_width


def random_resized_crop_flip(images: torch.Tensor, scale: tuple[float, float] = (0.25, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_prob: float = 0.5,
                             generator: torch.Generator | None = None,
                             attempts: int = 10) -> torch.Tensor:
    """RandomResizedCrop(H×W, ``scale``, ``ratio``) then RandomHorizontalFlip, per sample (§4.5 local view).

    Each sample's box (see :func:`_resized_crop_boxes`) is resized back to the input size with
    bilinear ``grid_sample`` (``align_corners=False``), the same as cropping the box and resizing
    it with ``F.interpolate(mode='bilinear', align_corners=False)``. Output pixel centre ``u``
    samples input coordinate ``left + (u + 0.5)·box_width/W - 0.5``, clamped to the box's outer
    pixel centres; in normalised coordinates that is an affine map ``x = s·base + t`` with
    ``s = box_width/W`` and ``t = (2·left + box_width)/W - 1``; a flip negates ``s``.
    Differentiable w.r.t. ``images``.

    Random draws, in order: the box parameters, then flip uniforms ``(N,)``.
    """
    _check_batch(images, "random_resized_crop_flip")
    _check_probability(flip_prob)
    if not images.is_floating_point():
        raise TypeError(f"random_resized_crop_flip expects floating images, got {images.dtype}")
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]) or attempts < 1:
        raise ValueError(f"need 0 < scale[0] <= scale[1], 0 < ratio[0] <= ratio[1] and attempts >= 1, "
                         f"got scale={scale}, ratio={ratio}, attempts={attempts}")
    count, channels, height, width = images.shape
    device = images.device
    top, left, box_height, box_width = _resized_crop_boxes(count, height, width, scale, ratio, attempts,
                                                           device, generator)
    flips = random_uniform((count,), device, generator) < flip_prob

    compute_dtype = torch.float32 if images.dtype in (torch.float16, torch.bfloat16) else images.dtype
    scale_x = (box_width / width) * torch.where(flips, -1.0, 1.0)
    scale_y = box_height / height
    shift_x = (2.0 * left + box_width) / width - 1.0
    shift_y = (2.0 * top + box_height) / height - 1.0
    zeros = torch.zeros_like(scale_x)
    theta = torch.stack([torch.stack([scale_x, zeros, shift_x], dim=1),
                         torch.stack([zeros, scale_y, shift_y], dim=1)], dim=1).to(compute_dtype)
    grid = F.affine_grid(theta, [count, channels, height, width], align_corners=False)
    # Crop first, then resize: coordinates beyond the box's outer pixel centres read the box's
    # edge pixels (as resizing the cropped image does), never the pixels next to the box.
    lowest_x = ((2.0 * left + 1.0) / width - 1.0).to(compute_dtype).view(count, 1, 1)
    highest_x = ((2.0 * (left + box_width) - 1.0) / width - 1.0).to(compute_dtype).view(count, 1, 1)
    lowest_y = ((2.0 * top + 1.0) / height - 1.0).to(compute_dtype).view(count, 1, 1)
    highest_y = ((2.0 * (top + box_height) - 1.0) / height - 1.0).to(compute_dtype).view(count, 1, 1)
    grid = torch.stack([torch.minimum(torch.maximum(grid[..., 0], lowest_x), highest_x),
                        torch.minimum(torch.maximum(grid[..., 1], lowest_y), highest_y)], dim=-1)
    resized = F.grid_sample(images.to(compute_dtype), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
    return resized.to(images.dtype)


# ----------------------------------------------------------------------------- §4.4 ADI jitter
def jitter_flip(images: torch.Tensor, max_shift: int = 4, flip_prob: float = 0.5,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """ADI jitter (§4.4): one circular shift ``(dy, dx)`` in ``[-max_shift, max_shift]²`` for the whole
    batch (``torch.roll`` semantics), then a horizontal flip of the whole batch with probability
    ``flip_prob``.

    Implemented with ``index_select`` on device-resident indices instead of ``torch.roll`` with
    Python offsets, so the random offset never has to be copied to the host (this runs at every
    one of ADI's 1000 pixel iterations). Differentiable for float input.

    Random draws, in order: offsets ``(2,)`` integers, then one flip uniform.
    """
    _check_batch(images, "jitter_flip")
    _check_probability(flip_prob)
    if max_shift < 0:
        raise ValueError(f"max_shift must be non-negative, got {max_shift}")
    height, width = images.shape[-2:]
    device = images.device
    shifts = random_integers(-max_shift, max_shift + 1, (2,), device, generator)
    flip = random_uniform((1,), device, generator) < flip_prob

    rows = torch.arange(height, device=device)
    columns = torch.arange(width, device=device)
    source_rows = torch.remainder(rows - shifts[0], height)                # roll: out[i] = in[i - dy]
    read_columns = torch.where(flip, (width - 1) - columns, columns)       # flip after the roll
    source_columns = torch.remainder(read_columns - shifts[1], width)
    return images.index_select(2, source_rows).index_select(3, source_columns)
