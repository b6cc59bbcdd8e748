"""shardmap: sharded, streaming lesion network mapping and perturbation modelling.

The package is split by concept; importing it stays cheap (no NumPy or nibabel at
import time) because the sample-sheet helpers also run inside the Snakemake process.
"""

__version__ = "0.1.0"
