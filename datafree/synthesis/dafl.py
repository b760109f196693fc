"""DAFL — Data-Free Learning of Student Networks (Chen et al., ICCV 2019), benchmark variant.

METHODS.md §4.1: persistent G-L generator (nz 512) trained on pseudo-label CE, the activation
prior and the class-balance term (oh 1, act 0.001, balance 20); 5 KD steps per generator
step; student loss KL at T = 1 ([REF]: the scripts' ``--T 20`` is ignored for DAFL).
"""
from datafree.synthesis.generative import GENERATIVE_DEFAULTS, GenerativeSynthesizer


class DAFLSynthesizer(GenerativeSynthesizer):
    """DAFL: the shared generative synthesizer with DAFL's weights (§4.7 row DAFL)."""

    DEFAULTS = {**GENERATIVE_DEFAULTS, "nz": 512, "kd_steps": 5,
                "oh": 1.0, "act": 0.001, "balance": 20.0, "bn": 0.0, "adv": 0.0}
