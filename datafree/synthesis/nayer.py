"""NAYER: noisy-layer generation from label embeddings (§11). STUB: being implemented."""
from datafree.synthesis.pooled import PooledSynthesizer


class NAYERSynthesizer(PooledSynthesizer):
    """NAYER: noisy-layer generation from label embeddings (§11)."""
