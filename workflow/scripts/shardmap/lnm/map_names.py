"""The names of the lesion arm's maps, shared by the library that writes them and the rules
that declare them (standard library only: the rules import it while the job graph is built)."""

# Per lesion: {lesion_id}_{name}.nii.gz
MAP_NAMES = ("AvgR", "AvgR_Fz", "T")
# With lnm.degree_regression: the maps above with the degree map regressed out
DEGREE_RESIDUAL_MAP_NAMES = ("AvgR_Fz_degree-resid", "T_degree-resid")
# The connectome's degree maps: {outdir}/lnm/connectome/{name}.nii.gz
DEGREE_MAP_NAMES = ("degree", "degree_Fz")
# Per group of lesions (and all lesions): {name}.nii.gz
GROUP_MAP_NAMES = ("sensitivity_pos", "sensitivity_neg", "mean_AvgR_Fz")
# The random-lesion null: the null lesions' group maps ({outdir}/lnm/null/group/[{group}/]{name}.nii.gz)
# and the real sensitivity's percentile among null groups ({outdir}/lnm/group/[{group}/]{name}.nii.gz)
NULL_GROUP_MAP_NAMES = GROUP_MAP_NAMES
VERSUS_NULL_MAP_NAMES = ("sensitivity_vs_null", "sensitivity_neg_vs_null")
# The specificity test: {outdir}/lnm/specificity/{name}.nii.gz (the tfce ones with tfce: true)
SPECIFICITY_MAP_NAMES = ("tstat", "p_uncorrected", "p_fwe", "conjunction", "tfce", "p_fwe_tfce")
