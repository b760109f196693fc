"""DAFL — Data-Free Learning of Student Networks (Chen et al., ICCV 2019), benchmark variant.

METHODS.md §4.1: persistent G-L generator (nz 512) trained on pseudo-label CE, the activation
prior and the class-balance term (oh 1, act 0.001, balance 20); 5 KD steps per generator
step; student loss KL at T = 1 ([REF]: the scripts' ``--T 20`` is ignored for DAFL).

On MNIST the defaults are the DAFL reference's own MNIST run (§20.1): the G-D generator with
BN eps 0.8 and the Tanh + affine-free-BN output (no normaliser), nz 100, Adam lr_G 0.2; the
student trained by Adam lr 2e-3 at a constant rate on the generator's own batch (B 512, one
generator step and one student step per iteration, 120 iterations per epoch, 200 epochs);
oh 1, act 0.1 and the information-entropy weight 5 on a base-10 logarithm, i.e. 5 / ln 10 on
the natural-log class-balance term (the same gradients).
"""
import math
from dataclasses import dataclass

from datafree.synthesis.generative import GenerativeSynthesizer

#: DAFL-train.py's MNIST settings (§20.1).
MNIST_ROW = {"batch_size": 512, "epochs": 200, "ep_steps": 120, "kd_steps": 1, "g_steps": 1,
             "optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0, "lr_schedule": "constant",
             "lr_g": 0.2, "beta1": 0.9, "beta2": 0.999, "T": 1.0, "nz": 100, "ngf": 64,
             "oh": 1.0, "act": 0.1, "balance": 5 / math.log(10), "bn": 0.0, "adv": 0.0,
             "generator": "G-D", "gen_output": "normalized", "gen_bn_eps": 0.8, "gen_sample_mode": "last"}


class DAFLSynthesizer(GenerativeSynthesizer):
    """DAFL: the shared generative synthesizer with DAFL's weights (§4.7 row DAFL; MNIST §20.1)."""

    @dataclass(frozen=True)
    class Options(GenerativeSynthesizer.Options):
        DEFAULTS = {"nz": 512, "kd_steps": 5, "oh": 1.0, "act": 0.001, "balance": 20.0, "bn": 0.0, "adv": 0.0}
        ROWS = {"mnist": MNIST_ROW}
