"""ZSKT — Zero-shot Knowledge Transfer via Adversarial Belief Matching (NeurIPS 2019), benchmark variant.

METHODS.md §4.2: persistent G-L generator (nz 256) maximising the teacher–student KL at
T = 1 (adv 1, no other term); 5 KD steps per generator step; student loss KL at T = 1.
The paper's attention-transfer term is not part of the benchmark variant.
"""
from dataclasses import dataclass

from datafree.synthesis.base import TestPreset
from datafree.synthesis.generative import GenerativeSynthesizer


class ZSKTSynthesizer(GenerativeSynthesizer):
    """ZSKT: the shared generative synthesizer with only the adversarial term (§4.7 row ZSKT)."""

    #: ZSKT's generator has no prior besides disagreement: the weakest learner (20-50 % over seeds).
    TEST_PRESET = TestPreset(learning_flags=("--epochs", "6", "--ep_steps", "60", "--kd_steps", "5", "--ngf", "16"),
                             learning_bar=30.0)

    @dataclass(frozen=True)
    class Options(GenerativeSynthesizer.Options):
        DEFAULTS = {"nz": 256, "kd_steps": 5, "adv": 1.0, "oh": 0.0, "act": 0.0, "balance": 0.0, "bn": 0.0}
