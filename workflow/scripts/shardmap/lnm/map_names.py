"""The names of the lesion arm's maps, shared by the library that writes them and the rules
that declare them (standard library only: the rules import it while the job graph is built)."""

# Per lesion: {lesion_id}_{name}.nii.gz
MAP_NAMES = ("AvgR", "AvgR_Fz", "T")
# Per group of lesions (and all lesions): {name}.nii.gz
GROUP_MAP_NAMES = ("sensitivity_pos", "sensitivity_neg", "mean_AvgR_Fz")
# The specificity test: {outdir}/lnm/specificity/{name}.nii.gz (the tfce ones with tfce: true)
SPECIFICITY_MAP_NAMES = ("tstat", "p_uncorrected", "p_fwe", "conjunction", "tfce", "p_fwe_tfce")
