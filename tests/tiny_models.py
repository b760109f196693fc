"""A tiny CIFAR classifier for fast CPU learning checks (not part of the benchmark's zoo).

It follows the classifier interface of METHODS.md §1.1 (``forward(x, return_features, l)``,
``feature_dim``) and has BatchNorm2d layers, so every method's machinery (BN-statistics hook,
CMI instance features, DAFL activation prior) runs on it unchanged, about 100× faster than
wrn16_1. Tests register it in ``registry.CLASSIFIERS`` under ``tiny_cnn`` while they run.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class TinyCNN(nn.Module):
    """conv(3→16)-BN-ReLU-pool → conv(16→32)-BN-ReLU-pool → conv(32→32)-BN-ReLU → avg-pool → linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.feature_dim = 32
        self.linear = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor, return_features: bool = False, l: int = 0):
        if l != 0:
            raise ValueError("TinyCNN has no partial forward")
        features = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        logits = self.linear(features)
        return (logits, features) if return_features else logits


def tiny_synthesis_setup(batch_size: int = 16, epochs: int = 4, num_classes: int = 10,
                         synthesis_batch_size: int | None = None, student: nn.Module | None = None):
    """A CPU ``SynthesisSetup`` around a frozen TinyCNN teacher and a TinyCNN student (seeded 0; or the
    given ``student``), fp32, CIFAR-10 geometry, normaliser mean 0.5 / std 0.25, the synthesis batch
    equal to the batch unless given: what the unit tests of a method build on."""
    from datafree.models import Normalizer
    from datafree.synthesis.base import SynthesisSetup
    from datafree.synthesis.hooks import freeze

    torch.manual_seed(0)
    teacher = freeze(TinyCNN(num_classes))
    student = student if student is not None else TinyCNN(num_classes)
    return SynthesisSetup(teacher=teacher, student=student, normalizer=Normalizer((0.5,) * 3, (0.25,) * 3),
                          num_classes=num_classes, dataset="cifar10", teacher_name="tiny_cnn", batch_size=batch_size,
                          synthesis_batch_size=synthesis_batch_size or batch_size, epochs=epochs,
                          device=torch.device("cpu"),
                          autocast_dtype=None, channels_last=False, seed=0)
