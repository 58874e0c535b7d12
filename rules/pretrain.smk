# Stage: the checkpoints a seed's training starts from: its initial weights (rule
# init_model, every model.init) and, with model.init mlm, masked-LM pre-training of its encoder
# (rule pretrain). Library: src/bertgeom/initial.py, pretrain.py; files: docs/outputs.md.


rule init_model:
    """Per seed: the `init` checkpoint, exactly the weights the seed's first training stage starts
    from (random weights of the seed for scratch and mlm, the given checkpoint for pretrained).
    """
    input:
        tokenizer="results/tokens/tokenizer.json",
        tokenizer_config="results/tokens/tokenizer_config.json",
        special_tokens_map="results/tokens/special_tokens_map.json",
        pretrained=pretrained_model_input,
    output:
        **init_files("{seed}"),
    log:
        "logs/init_model/seed{seed}.log",
    conda:
        "../envs/bertgeom.yaml"
    threads: 1
    params:
        classes=CLASSES,
        model=model_params(),
        init_settings=initial_weight_settings(),
    script:
        "../scripts/init_model.py"


if MLM:

    rule pretrain:
        """Per seed (model.init mlm): masked-LM pre-training of the encoder on the train split's k-mers,
        from the seed's initial weights, resuming from results/checkpoints/pretrain/seed{seed}/ when a
        previous run was killed."""
        input:
            train="results/tokens/train.parquet",
            tokenizer="results/tokens/tokenizer.json",
            tokenizer_config="results/tokens/tokenizer_config.json",
            special_tokens_map="results/tokens/special_tokens_map.json",
        output:
            **pretrained_files("{seed}"),
        log:
            "logs/pretrain/seed{seed}.log",
        benchmark:
            "results/benchmarks/pretrain/seed{seed}.tsv"
        conda:
            "../envs/bertgeom.yaml"
        threads: 1
        params:
            checkpoints="results/checkpoints/pretrain/seed{seed}",
            preset=SETTINGS.get("model.preset"),
            pretrain=SETTINGS.block("pretrain"),
            pretrain_run=SETTINGS.execution("pretrain"),
        script:
            "../scripts/pretrain.py"
