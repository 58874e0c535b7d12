"""Rule pretrain: masked-LM pre-training of one seed's encoder, resumable from its checkpoints."""

from bertgeom.checkpoints import PRETRAINED_FILES
from bertgeom.io import file_directory, job_log
from bertgeom.pretrain import pretrain_seed
from bertgeom.tokens import TOKENIZER_NAMES

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    pretrain_seed(
        train_path=smk.input.train,
        tokenizer_dir=file_directory({name: smk.input[name] for name in TOKENIZER_NAMES}, TOKENIZER_NAMES),
        out_dir=file_directory(dict(smk.output.items()), PRETRAINED_FILES),
        ckpt_dir=smk.params.checkpoints,
        preset=smk.params.preset,
        settings={**smk.params.pretrain, **vars(smk.params.pretrain_run)},
        seed=int(smk.wildcards.seed),
        threads=smk.threads,
    )
