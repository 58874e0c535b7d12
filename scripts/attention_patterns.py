"""Rule attention_patterns: per-head metrics, gates, K90 samples and spike-domain attention of one seed."""

from bertgeom.io import job_log
from bertgeom.stats.attention import write_attention_patterns

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_attention_patterns(
        summary=smk.input.summary,
        attention=smk.input.attention,
        class_attention=smk.input.class_attention,
        token_map=smk.input.token_map,
        variants=smk.input.variants,
        null_scores=smk.input.null_scores,
        outputs=dict(smk.output.items()),
        patterns=smk.params.patterns,
        classes=smk.params.classes,
        seed=int(smk.wildcards.seed),
        batch_rows=smk.params.stats_run.batch_rows,
    )
