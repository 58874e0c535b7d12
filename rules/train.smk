# Stage: train and evaluate, one model per seed of config train.seeds.
# Library: src/bertgeom/train.py, model.py, evaluate.py; schemas: docs/outputs.md; docs/usage.md,
# "Training and evaluation". Resources (gpu, memory, runtime) come from profiles, not from here.


rule train:
    """Per seed: train BertForSequenceClassification on the training split (validated after every
    epoch), from the seed's pre-trained encoder with model.init mlm (a new classification head),
    resuming from results/checkpoints/seed{seed}/ when a previous run was killed.
    """
    input:
        train="results/tokens/train.parquet",
        val="results/tokens/val.parquet",
        tokenizer="results/tokens/tokenizer.json",
        tokenizer_config="results/tokens/tokenizer_config.json",
        special_tokens_map="results/tokens/special_tokens_map.json",
        pretrained=pretrained_model_input,
        background=background_input,
        encoder=encoder_input,
    output:
        **model_files("{seed}"),
    log:
        "logs/train/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/seed{seed}.tsv"
    conda:
        "../envs/bertgeom.yaml"
    threads: 1
    params:
        checkpoints="results/checkpoints/seed{seed}",
        classes=CLASSES,
        model=model_params(),
        train=SETTINGS.block("train", exclude=("seeds",)),
        train_run=SETTINGS.execution("train"),
        qc=SETTINGS.block("qc"),
        reference=SETTINGS.get("data.reference"),
    script:
        "../scripts/train.py"


rule evaluate:
    """Per seed: class probabilities and metrics (scikit-learn) of the model on the test split."""
    input:
        model="results/models/seed{seed}/model.safetensors",
        config="results/models/seed{seed}/config.json",
        test="results/tokens/test.parquet",
    output:
        predictions="results/eval/seed{seed}/predictions.parquet",
        metrics="results/eval/seed{seed}/metrics.json",
    log:
        "logs/evaluate/seed{seed}.log",
    conda:
        "../envs/bertgeom.yaml"
    threads: 1
    params:
        classes=CLASSES,
        train_run=SETTINGS.execution("train"),
    script:
        "../scripts/evaluate.py"
