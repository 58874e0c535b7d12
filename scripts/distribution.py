"""Rule distribution: PCA, probe, silhouette and 2-D embeddings of the [CLS] and mean vectors of one seed."""

from bertgeom.io import job_log
from bertgeom.stats.distribution import write_distribution

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_distribution(
        summary=smk.input.summary,
        distribution_out=smk.output.distribution,
        embedding_out=smk.output.embedding,
        classes=smk.params.classes,
        seed=int(smk.wildcards.seed),
        options={**smk.params.stats, **vars(smk.params.stats_run)},
        threads=smk.threads,
    )
