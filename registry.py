"""Names -> constructors for everything a command line can ask for by name.

One place to look up classifiers (METHODS.md §1.1), datasets (§2.1) and data-free methods
(§3.4, §4, §5). Lookups are by exact name only (§7 item 12); an unknown name raises
:class:`datafree.errors.UsageError` listing the valid ones.

Adding a method = one module under ``datafree/synthesis/`` plus one line in ``METHODS``.
"""
from __future__ import annotations

from typing import Mapping, TypeVar

import torch.nn as nn

from datafree.data import DATASETS, DatasetInfo
from datafree.errors import UsageError
from datafree.models import CLASSIFIERS
from datafree.options import Options
from datafree.synthesis.adadfkd import AdaDFKDSynthesizer
from datafree.synthesis.adi import ADISynthesizer
from datafree.synthesis.base import Synthesizer
from datafree.synthesis.cmi import CMISynthesizer
from datafree.synthesis.cudfkd import CuDFKDSynthesizer
from datafree.synthesis.dafl import DAFLSynthesizer
from datafree.synthesis.dfad import DFADSynthesizer
from datafree.synthesis.mbdfkd import MBDFKDSynthesizer
from datafree.synthesis.predfkd import PREDFKDSynthesizer
from datafree.synthesis.dfq import DFQSynthesizer
from datafree.synthesis.fast import FastSynthesizer
from datafree.synthesis.nayer import NAYERSynthesizer
from datafree.synthesis.zskt import ZSKTSynthesizer

METHODS: dict[str, type[Synthesizer]] = {
    "cudfkd": CuDFKDSynthesizer,
    "cmi": CMISynthesizer,
    "dafl": DAFLSynthesizer,
    "zskt": ZSKTSynthesizer,
    "adi": ADISynthesizer,
    "dfq": DFQSynthesizer,
    "fast": FastSynthesizer,
    "nayer": NAYERSynthesizer,
    "adadfkd": AdaDFKDSynthesizer,
    "dfad": DFADSynthesizer,
    "mbdfkd": MBDFKDSynthesizer,
    "predfkd": PREDFKDSynthesizer,
}

_Value = TypeVar("_Value")


def lookup(table: Mapping[str, _Value], name: str, kind: str) -> _Value:
    """Return ``table[name]``, or raise a one-line UsageError listing the valid names."""
    if name not in table:
        raise UsageError(f"unknown {kind} '{name}'; valid {kind}s: {', '.join(table)}")
    return table[name]


def method_options() -> dict[str, type[Options]]:
    """Each registered method's typed options (:mod:`datafree.options`): the command line is generated
    from this table, and a flag is refused for a method whose options lack it."""
    return {name: method.Options for name, method in METHODS.items()}


def get_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build the classifier called exactly ``name`` with ``num_classes`` outputs for images of
    ``in_channels`` channels (§1; 1 for MNIST). Every builder takes ``in_channels`` as a keyword."""
    if num_classes < 1:
        raise UsageError(f"num_classes must be positive, got {num_classes}")
    return lookup(CLASSIFIERS, name, "model")(num_classes, in_channels=in_channels)


def get_dataset(name: str) -> DatasetInfo:
    """The dataset entry (§2.1, §20): classes, image geometry, statistics, reader, augmentation."""
    return lookup(DATASETS, name, "dataset")


def get_method(name: str) -> type[Synthesizer]:
    """The synthesizer class implementing the data-free method ``name``."""
    return lookup(METHODS, name, "method")
