# Stage: open set. Background genomes for outlier exposure (an input of train), synthetic genomes
# outside the training data, and per seed: the open-set threshold and temperature (written into the
# model directory for `bertgeom predict`), their evaluation, and the model card.
# Library: src/bertgeom/genome_sets.py, openset.py, openset_stage.py, handoff.py; docs/usage.md,
# "Predict new genomes"; docs/outputs.md.


rule background:
    """Background genomes (the reference with a small share of a class profile's mutations), their
    spikes tokenized with the training vocabulary: train pulls their softmax to uniform.
    """
    input:
        reference=resolve(config["data"]["reference"]),
        variants=resolve(config["data"]["variants"]),
        tokenizer="results/tokens/tokenizer.json",
        tokenizer_config="results/tokens/tokenizer_config.json",
        special_tokens_map="results/tokens/special_tokens_map.json",
    output:
        "results/tokens/background.parquet",
    log:
        "logs/background/background.log",
    benchmark:
        "results/benchmarks/background/background.tsv"
    conda:
        "../envs/bertgeom.yaml"
    params:
        classes=CLASSES,
        synthetic=synthetic_variety(),
        background=SETTINGS.block("data.background"),
        seed=SETTINGS.get("data.seed"),
        qc=extractor_qc(),
    script:
        "../scripts/background.py"


rule open_set_fit_genomes:
    """The genomes that choose the open-set threshold (`threshold` out-of-class lineages, fresh
    in-class genomes) and the temperature (hard in-class genomes), as tokens."""
    input:
        reference=resolve(config["data"]["reference"]),
        variants=resolve(config["data"]["variants"]),
        tokenizer="results/tokens/tokenizer.json",
        tokenizer_config="results/tokens/tokenizer_config.json",
        special_tokens_map="results/tokens/special_tokens_map.json",
    output:
        **{
            name: f"results/open_set/genomes/{name}.parquet"
            for name in OPEN_SET_FIT_SETS
        },
    log:
        "logs/open_set_fit_genomes/open_set_fit_genomes.log",
    benchmark:
        "results/benchmarks/open_set_fit_genomes/open_set_fit_genomes.tsv"
    conda:
        "../envs/bertgeom.yaml"
    params:
        classes=CLASSES,
        synthetic=synthetic_variety(),
        open_set=SETTINGS.block(
            "open_set", exclude=("controls", "max_false_unassigned")
        ),
        seed=SETTINGS.get("data.seed"),
        qc=extractor_qc(),
    script:
        "../scripts/open_set_genomes.py"


rule open_set_eval_genomes:
    """The genomes that only measure the open set: the `evaluation` out-of-class lineages (and the
    variants.yaml classes left out of `classes`), the reference, shuffled spikes, random sequences.
    """
    input:
        reference=resolve(config["data"]["reference"]),
        variants=resolve(config["data"]["variants"]),
        tokenizer="results/tokens/tokenizer.json",
        tokenizer_config="results/tokens/tokenizer_config.json",
        special_tokens_map="results/tokens/special_tokens_map.json",
    output:
        evaluation="results/open_set/genomes/evaluation.parquet",
    log:
        "logs/open_set_eval_genomes/open_set_eval_genomes.log",
    benchmark:
        "results/benchmarks/open_set_eval_genomes/open_set_eval_genomes.tsv"
    conda:
        "../envs/bertgeom.yaml"
    params:
        classes=CLASSES,
        synthetic=synthetic_variety(),
        open_set={
            key: SETTINGS.get(f"open_set.{key}") for key in ("per_lineage", "controls")
        },
        seed=SETTINGS.get("data.seed"),
        qc=extractor_qc(),
    script:
        "../scripts/open_set_genomes.py"


rule open_set_fit:
    """Per seed: class means and shared covariances (training split), the open-set threshold and the
    temperature, into the model directory (open_set.json + open_set.safetensors)."""
    input:
        **{
            name: f"results/open_set/genomes/{name}.parquet"
            for name in OPEN_SET_FIT_SETS
        },
        model="results/models/seed{seed}/model.safetensors",
        config="results/models/seed{seed}/config.json",
        train="results/tokens/train.parquet",
        val="results/tokens/val.parquet",
    output:
        **{
            name: f"results/models/seed{{seed}}/{file}"
            for name, file in OPEN_SET_FILES.items()
        },
    log:
        "logs/open_set_fit/seed{seed}.log",
    benchmark:
        "results/benchmarks/open_set_fit/seed{seed}.tsv"
    wildcard_constraints:
        seed=r"\d+",
    conda:
        "../envs/bertgeom.yaml"
    threads: 1
    params:
        max_false_unassigned=SETTINGS.get("open_set.max_false_unassigned"),
        train_run=SETTINGS.execution("train"),
    script:
        "../scripts/open_set_fit.py"


rule open_set:
    """Per seed: the open-set answers on the test split and the evaluation genomes (per sequence, per
    type: AUROC and shares unassigned) and the calibration before/after temperature scaling.
    """
    input:
        **{
            name: f"results/models/seed{{seed}}/{file}"
            for name, file in OPEN_SET_FILES.items()
        },
        model="results/models/seed{seed}/model.safetensors",
        config="results/models/seed{seed}/config.json",
        test="results/tokens/test.parquet",
        evaluation="results/open_set/genomes/evaluation.parquet",
        calibration="results/open_set/genomes/calibration.parquet",
    output:
        scores="results/open_set/seed{seed}/scores.parquet",
        summary="results/open_set/seed{seed}/summary.tsv",
        calibration="results/open_set/seed{seed}/calibration.json",
    log:
        "logs/open_set/seed{seed}.log",
    benchmark:
        "results/benchmarks/open_set/seed{seed}.tsv"
    wildcard_constraints:
        seed=r"\d+",
    conda:
        "../envs/bertgeom.yaml"
    threads: 1
    params:
        train_run=SETTINGS.execution("train"),
    script:
        "../scripts/open_set.py"


rule model_card:
    """Per seed: README.md of the model directory (data, classes, metrics, open set, calibration,
    intended use, how to load)."""
    input:
        training_info="results/models/seed{seed}/training_info.json",
        metrics="results/eval/seed{seed}/metrics.json",
        open_set="results/models/seed{seed}/open_set.json",
        summary="results/open_set/seed{seed}/summary.tsv",
    output:
        "results/models/seed{seed}/README.md",
    log:
        "logs/model_card/seed{seed}.log",
    wildcard_constraints:
        seed=r"\d+",
    conda:
        "../envs/bertgeom.yaml"
    script:
        "../scripts/model_card.py"
