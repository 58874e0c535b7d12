"""Rule train: one seed's classifier, resumable from its checkpoints."""

from bertgeom.io import file_directory, job_log
from bertgeom.tokens import TOKENIZER_NAMES
from bertgeom.train import MODEL_FILES, train_seed

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    train_seed(
        train_path=smk.input.train,
        val_path=smk.input.val,
        tokenizer_dir=file_directory({name: smk.input[name] for name in TOKENIZER_NAMES}, TOKENIZER_NAMES),
        out_dir=file_directory(dict(smk.output.items()), MODEL_FILES),
        ckpt_dir=smk.params.checkpoints,
        classes=smk.params.classes,
        model_cfg=smk.params.model,
        train_cfg={**smk.params.train, **vars(smk.params.train_run)},
        seed=int(smk.wildcards.seed),
        threads=smk.threads,
        recorded={"qc": smk.params.qc, "data": {"reference": smk.params.reference}},
        background=smk.input.background or None,
        encoder=file_directory({"model": smk.input.encoder}, MODEL_FILES) if smk.input.encoder else None,
    )
