"""Rule init_model: the weights one seed's first training stage starts from (the `init` checkpoint)."""

from bertgeom.checkpoints import HF_FILES
from bertgeom.initial import write_initial_model
from bertgeom.io import file_directory, job_log
from bertgeom.tokens import TOKENIZER_NAMES

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    write_initial_model(
        tokenizer_dir=file_directory({name: smk.input[name] for name in TOKENIZER_NAMES}, TOKENIZER_NAMES),
        out_dir=file_directory({name: smk.output[name] for name in HF_FILES}, HF_FILES),
        info_path=smk.output.info,
        classes=smk.params.classes,
        model_cfg=smk.params.model,
        seed=int(smk.wildcards.seed),
        init_settings=smk.params.init_settings,
    )
