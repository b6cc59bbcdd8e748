"""The Compositional Perturbation Autoencoder (CPA) on scvi-tools.

``from shardmap.cpa import CPA`` imports torch and scvi-tools; the rest of shardmap
does not need them.
"""

from .model import CPA

__all__ = ["CPA"]
