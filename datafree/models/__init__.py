"""Model zoo: CIFAR classifiers, generators and the Normalizer (METHODS.md §1).

``CLASSIFIERS`` maps the exact registry names of §1.1 to builders taking
``num_classes``; ``registry.get_model`` looks names up here.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from datafree.models.generators import (CurriculumGenerator, GeneratorS, LargeGenerator, NoisyLayerGenerator,
                                        reset_default_init, reset_generator_init)
from datafree.models.normalizer import Normalizer
from datafree.models.resnet import ResNet, resnet18, resnet34
from datafree.models.vgg import VGG, vgg11
from datafree.models.wrn import WideResNet, wrn16_1, wrn16_2, wrn40_1, wrn40_2

CLASSIFIERS: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "vgg11": vgg11,
    "wrn16_1": wrn16_1,
    "wrn16_2": wrn16_2,
    "wrn40_1": wrn40_1,
    "wrn40_2": wrn40_2,
}

#: Other spellings of these architectures found in released checkpoints (their ``arch`` entry),
#: e.g. the batch-normalised VGG-11 of CMI's model zoo (§1.3).
ARCH_ALIASES: dict[str, str] = {
    "vgg11_bn": "vgg11",
    **{f"wrn_{depth}_{width}": f"wrn{depth}_{width}" for depth, width in ((16, 1), (16, 2), (40, 1), (40, 2))},
}

__all__ = [
    "ARCH_ALIASES",
    "CLASSIFIERS",
    "CurriculumGenerator",
    "GeneratorS",
    "LargeGenerator",
    "NoisyLayerGenerator",
    "Normalizer",
    "ResNet",
    "VGG",
    "WideResNet",
    "reset_default_init",
    "reset_generator_init",
]
