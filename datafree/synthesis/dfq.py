"""DFQ — Data-Free Network Quantization With Adversarial Knowledge Distillation (CVPRW 2020).

METHODS.md §4.3: persistent G-L generator (nz 256) trained on the BN-statistics loss,
pseudo-label CE, class balance and the adversarial KL (bn 1, oh 1, balance 20, adv 1);
10 KD steps per generator step; student loss KL at T = 1.
"""
from dataclasses import dataclass

from datafree.synthesis.generative import GenerativeSynthesizer


class DFQSynthesizer(GenerativeSynthesizer):
    """DFQ: the shared generative synthesizer with DFQ's weights (§4.7 row DFQ)."""

    @dataclass(frozen=True)
    class Options(GenerativeSynthesizer.Options):
        DEFAULTS = {"nz": 256, "kd_steps": 10, "bn": 1.0, "oh": 1.0, "balance": 20.0, "adv": 1.0, "act": 0.0}
