# Stage: activations. Library: src/bertgeom/activations/ with hooks.py and measures.py; schemas: docs/outputs.md.


rule dump_activations:
    """Per seed: a forward pass over config activations.splits with hooks on every stage of every
    layer; sufficient statistics for every sequence, token vectors and attention matrices for a
    stratified subset, class-averaged attention matrices (results/activations/seed{seed}/).
    """
    input:
        config="results/models/seed{seed}/config.json",
        weights="results/models/seed{seed}/model.safetensors",
        tokens=activation_token_files(),
    output:
        **activation_files("{seed}"),
    log:
        "logs/dump_activations/seed{seed}.log",
    benchmark:
        "results/benchmarks/dump_activations/seed{seed}.tsv"
    conda:
        "../envs/bertgeom.yaml"
    threads: 4
    params:
        classes=CLASSES,
        activations=SETTINGS.block("activations"),
        top_keys=SETTINGS.get("patterns.top_keys"),
        activations_run=SETTINGS.execution("activations"),
    script:
        "../scripts/dump_activations.py"
