"""Rule split_and_tokenize: train/val/test splits, the k-mer vocabulary and the tokenized splits."""

from bertgeom.io import job_log
from bertgeom.tokens import split_and_tokenize

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    split_and_tokenize(
        spike=smk.input.spike,
        variants=smk.input.variants,
        outputs=dict(smk.output.items()),
        classes=smk.params.classes,
        tokens=smk.params.tokens,
        base_vocab=smk.params.base_vocab,
    )
