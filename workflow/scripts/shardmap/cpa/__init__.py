"""The Compositional Perturbation Autoencoder (CPA) on scvi-tools.

``from shardmap.cpa import CPA`` imports torch and scvi-tools; the rest of shardmap does
not need them, and neither do the modules of this package that only read files
(``h5ad_rows``, ``scores``), which the report's figure rules use without PyTorch.
"""

__all__ = ["CPA"]


def __getattr__(name):
    if name == "CPA":
        from .model import CPA

        return CPA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
