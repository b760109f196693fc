"""Model zoo: CIFAR, MNIST, Tiny-ImageNet and ImageNet classifiers, generators, the Normalizer (METHODS.md §1).

``CLASSIFIERS`` maps the exact registry names of §1.1, §1.5, §18.2 and §19.2 to builders taking
``num_classes`` and the keyword ``in_channels``; ``registry.get_model`` looks names up here.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from datafree.models.generators import (CurriculumGenerator, GeneratorS, ImageSizeError, LargeGenerator,
                                        NoisyLayerGenerator, ReferenceGenerator, SpatialLatentGenerator, fast_generator,
                                        reset_default_init, reset_generator_init)
from datafree.models.imagenet import (MobileNetV2, TorchvisionResNet, resnet18_imagenet, resnet34_imagenet,
                                      resnet50_imagenet, tv_mobilenet_v2, tv_resnet18, tv_resnet50)
from datafree.models.lenet import HintonNet, LeNet5, hintonnet, hintonnet_half, lenet5, lenet5_half
from datafree.models.normalizer import Normalizer
from datafree.models.resnet import ResNet, resnet18, resnet34, resnet50
from datafree.models.vgg import VGG, vgg11
from datafree.models.wrn import WideResNet, wrn16_1, wrn16_2, wrn40_1, wrn40_2

CLASSIFIERS: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "vgg11": vgg11,
    "wrn16_1": wrn16_1,
    "wrn16_2": wrn16_2,
    "wrn40_1": wrn40_1,
    "wrn40_2": wrn40_2,
    "lenet5": lenet5,
    "lenet5_half": lenet5_half,
    "hintonnet": hintonnet,
    "hintonnet_half": hintonnet_half,
    # §18.2 family (b): ljrprocc's Tiny-ImageNet teachers (torchvision layout, 3x3 biased stem, no max-pool)
    "resnet18_imagenet": resnet18_imagenet,
    "resnet34_imagenet": resnet34_imagenet,
    "resnet50_imagenet": resnet50_imagenet,
    # §19.2: torchvision's ImageNet models, for its published weights
    "tv_resnet18": tv_resnet18,
    "tv_resnet50": tv_resnet50,
    "tv_mobilenet_v2": tv_mobilenet_v2,
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
    "HintonNet",
    "ImageSizeError",
    "LeNet5",
    "LargeGenerator",
    "MobileNetV2",
    "NoisyLayerGenerator",
    "Normalizer",
    "ReferenceGenerator",
    "ResNet",
    "TorchvisionResNet",
    "SpatialLatentGenerator",
    "VGG",
    "WideResNet",
    "fast_generator",
    "reset_default_init",
    "reset_generator_init",
]
