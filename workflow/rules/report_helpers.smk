# The report's helpers (included by report.smk): the figure files of each enabled arm.
from shardmap.report import resources as report_res

FIGURES = f"{OUT}/figures"
REPORT_LOGS = f"{OUT}/logs/report"
CPA_LATENT_FIGURES = {"X_cpa_basal": "umap_basal", "X_cpa": "umap_latent"}


def figure_lesions():
    """The lesions that get a figure of their own: the first report_lesion_figures of the
    sheet (all with 'all'); every lesion is in the summary figure."""
    cap = config["report_lesion_figures"]
    return LESIONS if cap == "all" else LESIONS[:cap]


def lesion_figure_file(lesion):
    return f"{FIGURES}/lnm/lesions/{lesion.lesion_id}.png"


def lesion_figure_files():
    return [lesion_figure_file(les) for les in figure_lesions()]


def sensitivity_figure_files():
    """{group: PNG}; group "" is all lesions together."""
    return {group: f"{FIGURES}/lnm/sensitivity_{group or 'all'}.png" for group in [""] + GROUPS}


def specificity_figure_files():
    """{name: (PNG, label)} of the specificity test's figures."""
    return {
        "tstat": (f"{FIGURES}/lnm/specificity_tstat.png", "t map, FWE-significant voxels"),
        "conjunction": (f"{FIGURES}/lnm/specificity_conjunction.png", "conjunction with sensitivity"),
        "null": (f"{FIGURES}/lnm/specificity_null.png", "null distribution of the maximum"),
    }


def hub_figure_files():
    """{name: PNG} of the hub controls' figures; with the random-lesion null, one
    real-against-null figure per group ("null_all", "null_{group}")."""
    files = {"degree": f"{FIGURES}/lnm/degree.png", "hub_bias": f"{FIGURES}/lnm/hub_bias.png"}
    if LNM["null_lesions"]["enabled"]:
        files.update({f"null_{group or 'all'}": f"{FIGURES}/lnm/null_{group or 'all'}.png" for group in [""] + GROUPS})
    return files


def report_outputs():
    """The report's figures and tables of the default run, for the enabled arms."""
    files = [f"{OUT}/report/software.tsv", f"{OUT}/report/config.yaml"]
    if config["lnm"]["enabled"] and LESIONS:
        files += lesion_figure_files() + list(sensitivity_figure_files().values())
        files += [f"{FIGURES}/lnm/qc.png", f"{FIGURES}/lnm/lesions_summary.png"]
        files += list(hub_figure_files().values())
    if config["lnm"]["enabled"] and SPEC["enabled"]:
        files += [path for path, _ in specificity_figure_files().values()]
    if config["cpa"]["enabled"]:
        if TRAINING:
            files += [f"{FIGURES}/cpa/training.png", f"{FIGURES}/cpa/predicted_vs_observed.png"]
            files += [f"{FIGURES}/cpa/baselines.png"]
        files += [f"{FIGURES}/cpa/drug_embeddings.png"]
        if HAS_ADATA:
            files += [f"{FIGURES}/cpa/{name}.png" for name in CPA_LATENT_FIGURES.values()]
            files += [f"{FIGURES}/cpa/dose_response.png"] if config["cpa"]["dose_response"]["drugs"] else []
        files += [f"{FIGURES}/cpa/umap_query.png"] if CPA_QUERIES else []
    return files


def query_umap_inputs():
    """The latents of cpa.adata (where the run has it) and of every query."""
    files = [f"{OUT}/cpa/latents.h5ad"] if HAS_ADATA else []
    return files + [f"{OUT}/cpa/query/{name}/latents.h5ad" for name in CPA_QUERIES]


def query_umap_sources():
    """{label: (latents file, covariate rules)} of the query UMAP, in query_umap_inputs' order."""
    sources = {"cpa.adata (training)": (f"{OUT}/cpa/latents.h5ad", {})} if HAS_ADATA else {}
    for name, entry in CPA_QUERIES.items():
        sources[f"query {name}"] = (f"{OUT}/cpa/query/{name}/latents.h5ad", entry["covariates"])
    return sources
