# Stage: activations. Library: src/bertgeom/activations/ with hooks.py and measures.py; schemas: docs/outputs.md.


rule dump_activations:
    """Per seed and checkpoint (init, mlm, finetuned; bertgeom.checkpoints): a forward pass over
    config activations.splits with hooks on every stage of every layer; sufficient statistics for
    every sequence, token vectors and attention matrices for a stratified subset, class-averaged
    attention matrices (results/activations/seed{seed}/{checkpoint}/). Checkpoints without a trained
    classifier have null predictions, and their class averages run over every sequence of a class.
    """
    input:
        unpack(checkpoint_model),
        tokens=activation_token_files(),
    output:
        **activation_files("{seed}", "{checkpoint}"),
    log:
        "logs/dump_activations/seed{seed}/{checkpoint}.log",
    benchmark:
        "results/benchmarks/dump_activations/seed{seed}/{checkpoint}.tsv"
    conda:
        "../envs/bertgeom.yaml"
    threads: 4
    params:
        classes=CLASSES,
        activations=SETTINGS.block("activations", exclude=("checkpoints",)),
        top_keys=SETTINGS.get("patterns.top_keys"),
        activations_run=SETTINGS.execution("activations"),
        classifier=lambda wildcards: wildcards.checkpoint in CLASSIFIED,
    script:
        "../scripts/dump_activations.py"
