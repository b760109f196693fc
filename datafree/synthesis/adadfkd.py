"""AdaDFKD: CuDFKD with adaptive inter-sample relationships (§12). STUB: being implemented."""
from datafree.synthesis.cudfkd import CuDFKDSynthesizer


class AdaDFKDSynthesizer(CuDFKDSynthesizer):
    """AdaDFKD: CuDFKD with adaptive inter-sample relationships (§12)."""
