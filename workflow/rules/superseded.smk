# Outputs of an earlier run that the config no longer asks for (shardmap/superseded.py):
# the list of what this config asks for, {outdir}/outputs.txt, is updated last, and the
# run that shortens it moves the files it dropped to {outdir}/superseded/<date-time>/ with
# a note. It depends on every default target, so it runs when the run is complete (and
# whenever the targets change or one was made anew); it changes no result. update():
# Snakemake leaves the earlier list in place for the job to read.


rule superseded_outputs:
    input:
        default_outputs(),
    output:
        outputs=update(f"{OUT}/outputs.txt"),
    log:
        f"{OUT}/logs/superseded_outputs.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    resources:
        mem_mb=res.fixed_mb(100),
        runtime=res.MIN_RUNTIME_MIN,
    script:
        "../scripts/superseded_outputs.py"
