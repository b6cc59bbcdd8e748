"""shardmap: sharded, streaming lesion network mapping and perturbation modelling.

One package per arm: ``lnm`` (lesion network mapping), ``cpa`` (the perturbation model)
and ``report`` (the figures and tables of ``snakemake --report``). At this level only
what both arms use: ``atomic`` (outputs written whole or not at all), ``errors``,
``task`` (what every entry script does first), ``config_check`` and ``resources`` (the
request arithmetic of every task).

Importing a package stays cheap (no NumPy or nibabel at import time) because the
sample-sheet and resource helpers also run inside the Snakemake process.
"""

__version__ = "0.1.0"
