"""The MNIST classifiers of DAFL's Table 1: LeNet-5, LeNet-5-Half and the HintonNet MLPs (METHODS.md §1.5).

* ``lenet5``: conv 5×5 1→6, ReLU, max-pool 2, conv 5×5 6→16, ReLU, max-pool 2, conv 5×5 16→120,
  ReLU (the 120-d feature), Linear 120→84, ReLU, Linear 84→C. 61,706 parameters for 32-px
  one-channel inputs and C = 10. Module names follow the DAFL reference (``conv1..conv3``,
  ``fc1``, ``fc2``), so a ``state_dict`` saved from its model loads without renaming.
* ``lenet5_half``: every width halved (3, 8, 60, 42): 15,738 parameters.
* ``hintonnet`` / ``hintonnet_half``: the MLPs 784-1200-1200-C and 784-800-800-C (ReLU), 2,395,210 and
  1,276,810 parameters. They read the digit at its native 28×28 (784 inputs): an input of another
  size (the 32-px MNIST entry) is resized to 28×28 first (bilinear, antialiased), §20.

None of them has a BatchNorm layer: methods whose synthesis matches BN statistics refuse such a
teacher (§20). ``forward(x, return_features=False)`` follows the common interface of §1.1; the
feature is the input of the last Linear's predecessor block (LeNet: the 120-d conv3 output, the
DAFL activation prior's feature; HintonNet: the last hidden layer).
"""
from __future__ import annotations

import torch
import torch.nn.functional as functional
from torch import nn

HINTON_INPUT_SIZE = 28


class LeNet5(nn.Module):
    """LeNet-5 of DAFL (§1.5) with conv widths ``(c1, c2, c3)`` and hidden width ``hidden``."""

    def __init__(self, widths: tuple[int, int, int] = (6, 16, 120), hidden: int = 84, num_classes: int = 10,
                 in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=5)
        self.conv2 = nn.Conv2d(widths[0], widths[1], kernel_size=5)
        self.conv3 = nn.Conv2d(widths[1], widths[2], kernel_size=5)
        self.fc1 = nn.Linear(widths[2], hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.feature_dim = widths[2]

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits ``(B, C)``, or ``(logits, feature)`` with the 120-d (60-d) conv3 output (§1.1)."""
        out = functional.max_pool2d(functional.relu(self.conv1(x)), 2)
        out = functional.max_pool2d(functional.relu(self.conv2(out)), 2)
        out = functional.relu(self.conv3(out))
        if out.shape[-2:] != (1, 1):
            raise ValueError(f"LeNet-5 expects 32×32 inputs, got {tuple(x.shape[-2:])}")
        features = torch.flatten(out, 1)
        logits = self.fc2(functional.relu(self.fc1(features)))
        return (logits, features) if return_features else logits


class HintonNet(nn.Module):
    """The MLP 784-``hidden``-``hidden``-C of DAFL's HintonNet rows (§1.5), ReLU activations."""

    def __init__(self, hidden: int = 1200, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        inputs = in_channels * HINTON_INPUT_SIZE * HINTON_INPUT_SIZE
        self.fc1 = nn.Linear(inputs, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)
        self.feature_dim = hidden

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits ``(B, C)``, or ``(logits, last hidden layer)``; non-28-px inputs are resized first."""
        if x.shape[-2:] != (HINTON_INPUT_SIZE, HINTON_INPUT_SIZE):
            x = functional.interpolate(x, size=(HINTON_INPUT_SIZE, HINTON_INPUT_SIZE), mode="bilinear",
                                       align_corners=False, antialias=True)
        features = functional.relu(self.fc2(functional.relu(self.fc1(torch.flatten(x, 1)))))
        logits = self.fc3(features)
        return (logits, features) if return_features else logits


def lenet5(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    """LeNet-5, the DAFL MNIST teacher (61,706 parameters)."""
    return LeNet5((6, 16, 120), 84, num_classes, in_channels)


def lenet5_half(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    """LeNet-5-Half, the DAFL MNIST student (15,738 parameters)."""
    return LeNet5((3, 8, 60), 42, num_classes, in_channels)


def hintonnet(num_classes: int = 10, in_channels: int = 1) -> HintonNet:
    """HintonNet 784-1200-1200-10, the DAFL MLP teacher (2,395,210 parameters)."""
    return HintonNet(1200, num_classes, in_channels)


def hintonnet_half(num_classes: int = 10, in_channels: int = 1) -> HintonNet:
    """HintonNet-Half 784-800-800-10, the DAFL MLP student (1,276,810 parameters)."""
    return HintonNet(800, num_classes, in_channels)
