"""The Compositional Perturbation Autoencoder (CPA) on scvi-tools: the perturbation arm.

The model, in scvi-tools' layout: ``model`` (the user-facing CPA class:
``setup_anndata``, train, latents, predictions, save and load), ``module`` (the torch
network), ``training`` (the Lightning plan with its adversarial schedule), and the
registry fields ``perturbations`` and ``categories``.

Data: ``conditions`` (condition and dose strings), ``values`` (matrix checks),
``h5ad_rows`` (rows of an .h5ad read alone), ``splits``, ``config_keys`` (what the
workflow config names), ``model_folder`` (the saved model), ``scores`` and ``baselines``
(how good its predictions are), ``simulate``.
The workflow's tasks are in ``tasks``, one module per rule; their cluster requests in
``resources``.

``from shardmap.cpa import CPA`` imports torch and scvi-tools; the rest of shardmap does
not need them, and neither do the modules of this package that only read files
(``h5ad_rows``, ``scores``, ``baselines``, ``conditions``), which the report's figure rules and the input
check use without PyTorch.
"""

__all__ = ["CPA"]


def __getattr__(name):
    if name == "CPA":
        from .model import CPA

        return CPA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
