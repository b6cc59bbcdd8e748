"""The design of the specificity GLM: which lesions are cases and which controls, and the
covariates that enter the model beside the case-control variable.

``select_design_lesions`` and ``sheet_covariate_values`` use only the standard library:
the workflow runs them while it builds the job graph, so that a bad design stops the
run before any task starts. ``build_design`` (NumPy) z-scores the covariates and checks
that the model can be fitted.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

from ...errors import InputError

# Covariates computed by the workflow itself rather than read from the sheet.
BUILT_IN_COVARIATES = ("volume", "centrality")
# A covariate this correlated with the case-control variable would leave it nothing to test.
MAX_CASE_CORRELATION = 0.9
# A covariate explained by the other columns of the design (intercept, case vs control, the
# other covariates) at R^2 above 1 - 1 / MAX_VARIANCE_INFLATION is refused: the GLM could not
# tell their effects apart, and a rank test with a tolerance absolute to the data (NumPy's)
# passes a rounded sum of sub-scores and their total, then drops a direction of rounding
# noise. 100 is R^2 = 0.99, |r| = 0.995 for two covariates alone.
MAX_VARIANCE_INFLATION = 100.0


@dataclass(frozen=True)
class DesignSpec:
    """The parts of lnm.specificity that define the design."""

    cases: tuple[str, ...]
    controls: tuple[str, ...]
    covariates: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, spec):
        return cls(tuple(spec.get("cases", ())), tuple(spec.get("controls", ())),
                   tuple(spec.get("covariates", ())))

    @property
    def sheet_covariates(self):
        """The covariates read from the sheet's columns (all but the built-in ones)."""
        return tuple(name for name in self.covariates if name not in BUILT_IN_COVARIATES)


def select_design_lesions(lesions, spec, sheet):
    """The lesions of the design, in sheet order, with 1 for a case and 0 for a control.

    ``lesions`` are sheets.Lesion or sheets.LesionMap rows (anything with ``lesion_id``
    and ``group``). Lesions of other groups are left out of the GLM. Raises InputError
    when a group is both a case and a control group, names no lesion, or when cases or
    controls number fewer than 2.
    """
    both = sorted(set(spec.cases) & set(spec.controls))
    if both:
        raise InputError(f"lnm.specificity: group(s) {both} are listed in both cases and controls; "
                         "a lesion is either a case or a control, so list each group once.")
    for key, names in (("cases", spec.cases), ("controls", spec.controls)):
        if not names:
            raise InputError(f"lnm.specificity.{key} is empty; name the group(s) of the {key} "
                             f"(values of the group column of '{sheet}').")
    present = {les.group for les in lesions if les.group is not None}
    absent = [name for name in spec.cases + spec.controls if name not in present]
    if absent:
        raise InputError(f"lnm.specificity names group(s) {absent}, but no lesion of '{sheet}' is in them "
                         f"(the sheet's groups: {sorted(present) or 'none, it has no group column'}); "
                         "fix lnm.specificity.cases / controls or the sheet's group column.")
    selected = [(les, 1 if les.group in spec.cases else 0) for les in lesions
                if les.group in spec.cases or les.group in spec.controls]
    for key, value in (("cases", 1), ("controls", 0)):
        count = sum(1 for _, case in selected if case == value)
        if count < 2:
            raise InputError(f"lnm.specificity.{key} ({list(getattr(spec, key))}) hold(s) {count} lesion(s) "
                             f"in '{sheet}'; the GLM needs at least 2 {key} (and more for any power).")
    return selected


def smallest_p(n_cases, n_controls, n_permutations):
    """The smallest p the permutation test can give, and why: with N permutations p is at
    least 1 / (N + 1) (the unpermuted data count once), and random permutations can only
    reach as far as the distinct ways of splitting the lesions into cases and controls,
    C(n, cases), half as many when the groups have one size (the test is two-sided, and a
    split and its mirror give the same |t|). Returns (p, 'permutations' or 'design')."""
    splits = math.comb(n_cases + n_controls, n_cases) // (2 if n_cases == n_controls else 1)
    by_permutations = 1.0 / (n_permutations + 1)
    by_design = 1.0 / splits
    return (by_design, "design") if by_design > by_permutations else (by_permutations, "permutations")


def check_reachable_alpha(n_cases, n_controls, n_permutations, alpha):
    """InputError when no voxel could reach p < alpha (``smallest_p``), with the fix."""
    p, why = smallest_p(n_cases, n_controls, n_permutations)
    if p < alpha:
        return
    if why == "permutations":
        needed = math.floor(round(1.0 / alpha, 9) - 1.0) + 1
        raise InputError(f"lnm.specificity: with n_permutations {n_permutations} the smallest p the test can give "
                         f"is 1/{n_permutations + 1} = {p:.3g}, not below alpha {alpha:g}, so no voxel could be "
                         f"significant; set lnm.specificity.n_permutations to at least {needed}.")
    raise InputError(f"lnm.specificity: {n_cases} cases and {n_controls} controls can be split into cases and "
                     f"controls in only {round(1 / p)} distinct ways (the test is two-sided), so the smallest p "
                     f"is about {p:.3g} whatever n_permutations, not below alpha {alpha:g}: no voxel could be "
                     "significant. Add lesions to the design (4 cases and 4 controls give 35 ways, p down to 0.029).")


def _parse_number(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def sheet_covariate_values(selected, spec, sheet):
    """Numeric values of the sheet's covariates for the selected lesions.

    Returns
    -------
    dict covariate name -> list of float, in the order of ``selected``.

    Raises InputError naming the sheet, the column and the lesion when a declared
    covariate is not a column of the sheet, or a value is missing or not a number.
    """
    values = {}
    columns = {name for les, _ in selected for name, _ in les.columns}
    shadowed = sorted(set(spec.covariates) & set(BUILT_IN_COVARIATES) & columns)
    if shadowed:
        raise InputError(f"'{sheet}' has column(s) {shadowed}, the name(s) of built-in covariate(s) that the "
                         "workflow computes from each lesion; rename the column(s) (e.g. volume_ml) and name the "
                         "one you mean in lnm.specificity.covariates.")
    for name in spec.sheet_covariates:
        if name not in columns:
            raise InputError(
                f"lnm.specificity.covariates names '{name}', which is neither a built-in covariate "
                f"{list(BUILT_IN_COVARIATES)} nor a column of '{sheet}' with values for the cases and "
                f"controls (its other columns: {sorted(columns) or 'none'}); add the column or fix the name.")
        missing = [les.lesion_id for les, _ in selected if les.column(name) is None]
        if missing:
            raise InputError(f"'{sheet}': covariate '{name}' is empty for lesion(s) {missing[:5]}"
                             f"{' and more' if len(missing) > 5 else ''}; every case and control needs a "
                             "value (or drop the covariate, or the lesions, from the design).")
        column = []
        for les, _ in selected:
            text = les.column(name)
            try:
                column.append(_parse_number(text))
            except ValueError:
                raise InputError(f"'{sheet}': covariate '{name}' of lesion '{les.lesion_id}' is '{text}', "
                                 "not a finite number; covariates must be numeric, with a decimal point "
                                 "(not a comma), and categories coded as 0/1 columns.") from None
        values[name] = column
    return values


def check_covariate_values(selected, values, n_covariates):
    """The checks of build_design that need only the sheet, run while the job graph is
    built: each sheet covariate varies and is not nearly collinear with case vs control, the
    sheet covariates together are not nearly linearly dependent (``check_collinearity``),
    and the lesions leave a degree of freedom for ``n_covariates`` covariates (sheet and
    built-in)."""
    import statistics

    n = len(selected)
    if n - 2 - n_covariates < 1:
        raise InputError(f"lnm.specificity: {n} cases and controls leave no degree of freedom for {n_covariates} "
                         "covariate(s) (the GLM needs more lesions than 2 + covariates); use more lesions or "
                         "fewer covariates.")
    case = [float(is_case) for _, is_case in selected]
    for name, column in values.items():
        if max(column) - min(column) <= 1e-12 * max(1.0, abs(statistics.fmean(column))):
            raise InputError(f"lnm.specificity: covariate '{name}' is constant ({column[0]:g}) over the "
                             "cases and controls, so it cannot be told from the intercept; drop it.")
        r = statistics.correlation(column, case)
        if abs(r) > MAX_CASE_CORRELATION:
            raise InputError(f"lnm.specificity: covariate '{name}' correlates with case vs control at r = "
                             f"{r:.3f} (|r| > {MAX_CASE_CORRELATION}), so the GLM could not separate the two; "
                             "drop the covariate or balance it between the groups.")
    check_collinearity(case, values)


def check_collinearity(case, covariates):
    """InputError naming the covariate that the other columns of the design (intercept,
    case vs control, the other covariates) explain best, when its variance inflation factor
    1 / (1 - R^2) exceeds MAX_VARIANCE_INFLATION, with the columns that explain it.
    ``covariates``: name -> values in the order of ``case``. Each column is z-scored first,
    so the test does not depend on the covariates' units."""
    import numpy as np

    names = list(covariates)
    if len(names) < 1:
        return
    case = np.asarray(case, dtype=np.float64)
    columns = [np.asarray(covariates[name], dtype=np.float64) for name in names]
    scored = [(c - c.mean()) / c.std() for c in columns]
    labels = ["the intercept", "case vs control"] + [f"'{name}'" for name in names]
    design = np.column_stack([np.ones(case.size), (case - case.mean()) / case.std()] + scored)
    worst = None
    for j in range(len(names)):
        k = 2 + j
        others = np.delete(design, k, axis=1)
        coef = np.linalg.lstsq(others, design[:, k], rcond=None)[0]
        residual = design[:, k] - others @ coef
        r_squared = 1.0 - float(residual @ residual) / float(design[:, k] @ design[:, k])
        inflation = np.inf if r_squared >= 1.0 - 1e-15 else 1.0 / (1.0 - r_squared)
        if worst is None or inflation > worst[0]:
            worst = (inflation, r_squared, k, coef)
    inflation, r_squared, k, coef = worst
    if inflation <= MAX_VARIANCE_INFLATION:
        return
    other_labels = labels[:k] + labels[k + 1:]
    weight = np.abs(coef)
    partners = [label for label, w in zip(other_labels, weight) if w > 0.05 * weight.max() and label != labels[0]]
    shown = "inf" if not np.isfinite(inflation) else f"{inflation:.3g}"
    raise InputError(f"lnm.specificity: the covariates are (nearly) linearly dependent: covariate {labels[k]} is "
                     f"explained by {', '.join(partners) or 'the intercept'} at R^2 = {min(r_squared, 1.0):.9f} "
                     f"(variance inflation factor {shown}, more than {MAX_VARIANCE_INFLATION:g}), so the GLM cannot "
                     "tell their effects apart. Drop one of them (a total of sub-scores, or an age that is the sum "
                     "of two others, repeats what the others hold).")


@dataclass
class Design:
    """The design matrix of the GLM: intercept, case (1) vs control (0), z-scored covariates."""

    lesion_ids: list
    groups: list
    case: object  # (n,) float64 of 0/1
    covariate_names: list
    covariates: object  # (n, k) float64, z-scored
    raw_covariates: object  # (n, k) float64, as read or computed

    @property
    def n_lesions(self):
        return len(self.lesion_ids)


def build_design(selected, covariates):
    """Z-score the covariates and check that the case effect can be estimated.

    Parameters
    ----------
    selected : list of (lesion, 1 or 0) from select_design_lesions.
    covariates : dict name -> values in the order of ``selected`` (sheet and built-in).

    Raises InputError naming the covariate when it is constant over the design's lesions,
    correlated with the case-control variable beyond |r| = MAX_CASE_CORRELATION, or a linear
    combination of the other columns.
    """
    import numpy as np

    case = np.array([float(is_case) for _, is_case in selected])
    names = list(covariates)
    raw = np.column_stack([np.asarray(covariates[name], dtype=np.float64) for name in names]) if names \
        else np.zeros((len(selected), 0))
    scored = np.empty_like(raw)
    for j, name in enumerate(names):
        column = raw[:, j]
        sd = column.std()
        if not np.isfinite(sd) or sd <= 1e-12 * max(1.0, abs(column.mean())):
            raise InputError(f"lnm.specificity: covariate '{name}' is constant ({column[0]:g}) over the "
                             "cases and controls, so it cannot be told from the intercept; drop it.")
        scored[:, j] = (column - column.mean()) / sd
        r = float(np.corrcoef(scored[:, j], case)[0, 1])
        if abs(r) > MAX_CASE_CORRELATION:
            raise InputError(f"lnm.specificity: covariate '{name}' correlates with case vs control at r = "
                             f"{r:.3f} (|r| > {MAX_CASE_CORRELATION}), so the GLM could not separate the two; "
                             "drop the covariate or balance it between the groups.")
    check_collinearity(case, {name: raw[:, j] for j, name in enumerate(names)})
    return Design([les.lesion_id for les, _ in selected], [les.group for les, _ in selected], case,
                  names, scored, raw)


def write_design(path, design):
    """Write the design matrix as a TSV: one row per lesion, the columns the GLM used
    (covariates z-scored), then each covariate's raw value."""
    from ...atomic import atomic_open

    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["lesion_id", "group", "intercept", "case"] + design.covariate_names
                        + [f"{name}_raw" for name in design.covariate_names])
        for i, lesion_id in enumerate(design.lesion_ids):
            writer.writerow([lesion_id, design.groups[i], 1, int(design.case[i])]
                            + [f"{v:.10g}" for v in design.covariates[i]]
                            + [f"{v:.10g}" for v in design.raw_covariates[i]])
