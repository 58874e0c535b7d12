"""Rule background: background genomes for outlier exposure, as tokens of the training vocabulary."""

from bertgeom.genome_sets import write_background
from bertgeom.io import file_directory, job_log
from bertgeom.tokens import TOKENIZER_NAMES

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_background(
        reference=smk.input.reference,
        variants=smk.input.variants,
        tokenizer_dir=file_directory({name: smk.input[name] for name in TOKENIZER_NAMES}, TOKENIZER_NAMES),
        out=smk.output[0],
        classes=smk.params.classes,
        synthetic=smk.params.synthetic,
        background=smk.params.background,
        seed=smk.params.seed,
        qc=smk.params.qc,
    )
