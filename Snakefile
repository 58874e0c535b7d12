# bert-geometry: "The geometry of BERT" (arXiv 2502.12033), reproduced and extended.
# One rule file per stage of the paper; the library behind each is src/bertgeom/<stage>.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


# A seed is a number everywhere ("seed{seed}" must not match e.g. "seed0_old").
wildcard_constraints:
    seed=r"\d+",
    checkpoint=r"init|mlm|finetuned",


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/tokens.smk"
include: "rules/pretrain.smk"
include: "rules/train.smk"
include: "rules/openset.smk"
include: "rules/activations.smk"
include: "rules/stats.smk"
include: "rules/attention.smk"
include: "rules/figures.smk"
include: "rules/explorer.smk"


# Before the first job: warn when the projected outputs exceed the free space (bertgeom plan).
onstart:
    from bertgeom.plan import workflow_disk_warning

    warning = workflow_disk_warning(config, workflow.basedir, "results")
    if warning:
        print(warning, file=sys.stderr)


rule all:
    default_target: True
    input:
        final_outputs(),
