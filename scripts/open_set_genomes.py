"""Rules open_set_fit_genomes and open_set_eval_genomes: synthetic genome sets outside the training data, as tokens."""

from bertgeom.genome_sets import write_open_set_genomes
from bertgeom.io import file_directory, job_log
from bertgeom.tokens import TOKENIZER_NAMES

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_open_set_genomes(
        reference=smk.input.reference,
        variants=smk.input.variants,
        tokenizer_dir=file_directory({name: smk.input[name] for name in TOKENIZER_NAMES}, TOKENIZER_NAMES),
        outputs=dict(smk.output.items()),
        classes=smk.params.classes,
        synthetic=smk.params.synthetic,
        open_set=smk.params.open_set,
        seed=smk.params.seed,
        qc=smk.params.qc,
    )
