"""The drugs the config names for the trained model (``cpa.counterfactuals``,
``cpa.dose_response.drugs``), checked against the drugs of the screen.

The workflow checks them when it builds the job graph, from the screen's perturbation
column alone (a few distinct values, read with h5py), so a typo stops the run before
any job, and before any later run that only adds a counterfactual or a dose grid. A
screen the workflow generates itself (the demo's) is checked by rule cpa_check_inputs
once it exists. NumPy and pandas only: no model, no AnnData.
"""

from __future__ import annotations

from ..errors import InputError
from .conditions import SEPARATOR, parse_condition


def screen_drugs(adata_path, perturbation_key, control_group):
    """The drugs of the screen: every name in its conditions but the control group's."""
    from . import h5ad_rows

    conditions = h5ad_rows.distinct_values(adata_path, perturbation_key)
    return {drug.strip() for condition in conditions if str(condition).strip() != control_group
            for drug in str(condition).split(SEPARATOR)}


def check_named_drugs(known, counterfactuals, dose_response_drugs, control_group, adata_path):
    """InputError for the first entry of ``counterfactuals`` (cpa.counterfactuals) or of
    ``dose_response_drugs`` that names a drug no cell of the screen was treated with, or
    a counterfactual whose dosage does not give one dose per drug."""
    for number, item in enumerate(counterfactuals or []):
        if item["perturbation"] == control_group:
            continue
        # No dosage (possible only without a dose column, dosage_key: null) is every drug at dose 1.
        pairs = parse_condition(item["perturbation"], item.get("dosage"), control_group,
                                where=f"cpa.counterfactuals[{number}]: ")
        unknown = sorted({drug for drug, _ in pairs} - known)
        if unknown:
            raise InputError(f"cpa.counterfactuals[{number}] names {unknown}, which no cell of cpa.adata "
                             f"was treated with ('{adata_path}'); known drugs: {sorted(known)[:20]}.")
    combined = [drug for drug in dose_response_drugs or [] if SEPARATOR in drug]
    if combined:
        raise InputError(f"cpa.dose_response.drugs lists {combined}: a dose response is computed for single "
                         "drugs, one curve each; list the drugs of a combination one by one.")
    unknown = [drug for drug in dose_response_drugs or [] if drug not in known]
    if unknown:
        raise InputError(f"cpa.dose_response.drugs names {unknown}, which no cell of cpa.adata was treated "
                         f"with ('{adata_path}'); known drugs: {sorted(known)[:20]}. Fix the names (they are "
                         "case-sensitive).")
