# The report's helpers (included by report.smk): the figure files of each enabled arm.
from shardmap.report import resources as report_res

FIGURES = f"{OUT}/figures"
REPORT_LOGS = f"{OUT}/logs/report"
CPA_LATENT_FIGURES = {"X_cpa_basal": "umap_basal", "X_cpa": "umap_latent"}


def lesion_figure_files():
    return [f"{FIGURES}/lnm/lesions/{les.lesion_id}.png" for les in LESIONS]


def sensitivity_figure_files():
    """{group: PNG}; group "" is all lesions together."""
    return {group: f"{FIGURES}/lnm/sensitivity_{group or 'all'}.png" for group in [""] + GROUPS}


def report_outputs():
    """The report's figures and tables of the default run, for the enabled arms."""
    files = [f"{OUT}/report/software.tsv", f"{OUT}/report/config.yaml"]
    if config["lnm"]["enabled"]:
        files += lesion_figure_files() + list(sensitivity_figure_files().values())
        files += [f"{FIGURES}/lnm/qc.png"]
    if config["cpa"]["enabled"]:
        files += [f"{FIGURES}/cpa/training.png", f"{FIGURES}/cpa/predicted_vs_observed.png"]
        files += [f"{FIGURES}/cpa/{name}.png" for name in CPA_LATENT_FIGURES.values()]
    return files
