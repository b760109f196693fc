"""FastDFKD: a meta-learned generator adapted for a few steps per batch (§10). STUB: being implemented."""
from datafree.synthesis.pooled import PooledSynthesizer


class FastSynthesizer(PooledSynthesizer):
    """FastDFKD: a meta-learned generator adapted for a few steps per batch (§10)."""
