"""Rule directionality: directionality of subspace selection of one seed's model, weights and data."""

from bertgeom.io import file_directory, job_log
from bertgeom.stats.directionality import write_directionality
from bertgeom.train import MODEL_FILES

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_directionality(
        model_dir=file_directory({"model": smk.input.model, "config": smk.input.model_config}, MODEL_FILES),
        tokens=smk.input.tokens,
        attention=smk.input.attention,
        out=smk.output[0],
        eig_tol=smk.params.eig_tol,
        seed=int(smk.wildcards.seed),
    )
