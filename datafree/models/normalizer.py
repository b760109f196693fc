"""Per-channel image normaliser (METHODS.md §1.8).

Generators and pixel optimisers work in [0, 1] image space; classifiers expect
normalised inputs (§2.1 mean/std). ``Normalizer`` converts both ways and, for
pixel-space optimisation (ADI), clamps a normalised tensor so that its
de-normalised image stays in [0, 1].

mean/std are non-persistent buffers: ``.to(device)`` moves them, but they are
not written into checkpoints (they are constants of the dataset).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalizer(nn.Module):
    """``forward(x) = (x - mean) / std`` per channel, with its inverse and a [0, 1]-preserving clamp (§1.8).

    Works on ``(B, C, H, W)`` and ``(C, H, W)`` tensors; the buffers are cast to
    the input's dtype so half-precision inputs stay half precision.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor) -> None:
        super().__init__()
        mean_tensor = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_tensor = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_tensor.numel() != std_tensor.numel() or mean_tensor.numel() == 0:
            raise ValueError(
                f"mean and std need the same non-zero length, got {mean_tensor.numel()} and {std_tensor.numel()}"
            )
        if bool((std_tensor <= 0).any()):
            raise ValueError(f"std must be positive, got {std_tensor.tolist()}")
        # Shape (C, 1, 1) broadcasts against both (C, H, W) and (B, C, H, W).
        self.register_buffer("mean", mean_tensor.view(-1, 1, 1), persistent=False)
        self.register_buffer("std", std_tensor.view(-1, 1, 1), persistent=False)

    def _stats_like(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean and std on the tensor's device and dtype."""
        return self.mean.to(tensor), self.std.to(tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise images in [0, 1]: ``(x - mean) / std``."""
        mean, std = self._stats_like(x)
        return (x - mean) / std

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        """Invert :meth:`forward`: ``y * std + mean``."""
        mean, std = self._stats_like(y)
        return y * std + mean

    def clamp_normalized(self, y: torch.Tensor) -> torch.Tensor:
        """Clamp channel c of a normalised tensor into ``[-mean_c/std_c, (1-mean_c)/std_c]``.

        Equivalent to clamping ``denormalize(y)`` into [0, 1] (§1.8); returns a new tensor.
        """
        mean, std = self._stats_like(y)
        return torch.clamp(y, min=-mean / std, max=(1.0 - mean) / std)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
