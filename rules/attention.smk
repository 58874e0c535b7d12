# Stage: attention patterns (the paper's gate taxonomy) and directionality of subspace selection.
# Library: src/bertgeom/stats/{attention,directionality}.py; tables: README "Attention patterns
# and directionality". Across-seed means come from rule aggregate_seeds (rules/stats.smk).


rule attention_patterns:
    """Per seed: per-head attention metrics and gate scores, a gate label per head, K90 samples
    for the violin plots, and the share of attention per spike domain with a z-test."""
    input:
        summary="results/activations/seed{seed}/attention_summary.parquet",
        attention="results/activations/seed{seed}/attention.parquet",
        class_attention="results/activations/seed{seed}/class_attention.parquet",
        token_map="results/tokens/token_map.parquet",
        variants=resolve(config["data"]["variants"]),
    output:
        patterns="results/stats/seed{seed}/attention_patterns.parquet",
        gates="results/stats/seed{seed}/gates.parquet",
        k90="results/stats/seed{seed}/k90.parquet",
        domains="results/stats/seed{seed}/domain_attention.parquet",
    log:
        "logs/attention_patterns/seed{seed}.log",
    benchmark:
        "results/benchmarks/attention_patterns/seed{seed}.tsv"
    conda:
        "../envs/bertgeom.yaml"
    params:
        patterns=SETTINGS.block("patterns", exclude=("eig_tol",)),
        classes=CLASSES,
        stats_run=SETTINGS.execution("stats"),
    script:
        "../scripts/attention_patterns.py"


rule directionality:
    """Per seed: directionality index, eigenvalue signs, query/key principal angles and the
    value-output subspace overlap of every head from the weights; asymmetry of Q K^T and of A
    on the data; beside them what the original column-sliced code reports."""
    input:
        model="results/models/seed{seed}/model.safetensors",
        model_config="results/models/seed{seed}/config.json",
        tokens="results/activations/seed{seed}/tokens.parquet",
        attention="results/activations/seed{seed}/attention.parquet",
    output:
        "results/stats/seed{seed}/directionality.parquet",
    log:
        "logs/directionality/seed{seed}.log",
    benchmark:
        "results/benchmarks/directionality/seed{seed}.tsv"
    conda:
        "../envs/bertgeom.yaml"
    params:
        eig_tol=SETTINGS.get("patterns.eig_tol"),
    script:
        "../scripts/directionality.py"


rule gate_agreement:
    """Across seeds: agreement of the gate labels, at the same (layer, head) and after matching
    a layer's heads, against chance; the share of each gate per layer."""
    input:
        seed_files("results/stats/seed{seed}/gates.parquet"),
    output:
        "results/stats/all_seeds/gate_agreement.parquet",
    log:
        "logs/gate_agreement/gate_agreement.log",
    conda:
        "../envs/bertgeom.yaml"
    script:
        "../scripts/gate_agreement.py"


# results/stats/all_seeds/{name}.parquet of rule aggregate_seeds would match gate_agreement too.
ruleorder: gate_agreement > aggregate_seeds
