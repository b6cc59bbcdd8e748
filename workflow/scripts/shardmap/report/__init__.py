"""The report's figures and tables (``snakemake --report``): ``lnm_figures`` and
``cpa_figures`` draw each arm's PNGs with the shared helpers of ``plotting``;
``provenance`` writes the config used and the software versions; ``resources`` holds
the figure tasks' cluster requests."""
