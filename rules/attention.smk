# Stage: attention patterns (the paper's gate taxonomy) and directionality of subspace selection.
# Library: src/bertgeom/stats/{attention,directionality}.py; tables: docs/methods.md, "Attention patterns
# and directionality". Across-seed means come from rule aggregate_seeds (rules/stats.smk).


rule null_model:
    """An untrained model of the trained models' architecture (weights from patterns.nulls.seed)
    on the subset sequences: its per-matrix gate scores (the closed gate's null) and its own gate
    labels (the baseline of matching heads across seeds)."""
    input:
        model_config=model_files(SEEDS[0])["config"],
        tokens=activation_token_files(),
    output:
        scores="results/stats/null_model/scores.parquet",
        gates="results/stats/null_model/gates.parquet",
    log:
        "logs/null_model/null_model.log",
    benchmark:
        "results/benchmarks/null_model/null_model.tsv"
    conda:
        "../envs/bertgeom.yaml"
    params:
        patterns=NULL_MODEL_PATTERNS,
        subset_per_class=SETTINGS.get("activations.subset_per_class"),
    script:
        "../scripts/null_model.py"


rule attention_patterns:
    """Per seed: per-head attention metrics and gate scores, a null-calibrated gate label per head
    and per query row, K90 samples for the violin plots, and the share of attention per spike
    domain with t-tests."""
    input:
        summary="results/activations/seed{seed}/{checkpoint}/attention_summary.parquet",
        attention="results/activations/seed{seed}/{checkpoint}/attention.parquet",
        class_attention="results/activations/seed{seed}/{checkpoint}/class_attention.parquet",
        token_map="results/tokens/token_map.parquet",
        variants=resolve(config["data"]["variants"]),
        null_scores="results/stats/null_model/scores.parquet",
    output:
        patterns="results/stats/seed{seed}/{checkpoint}/attention_patterns.parquet",
        gates="results/stats/seed{seed}/{checkpoint}/gates.parquet",
        gate_tests="results/stats/seed{seed}/{checkpoint}/gate_tests.parquet",
        row_gates="results/stats/seed{seed}/{checkpoint}/row_gates.parquet",
        k90="results/stats/seed{seed}/{checkpoint}/k90.parquet",
        domains="results/stats/seed{seed}/{checkpoint}/domain_attention.parquet",
    log:
        "logs/attention_patterns/seed{seed}/{checkpoint}.log",
    benchmark:
        "results/benchmarks/attention_patterns/seed{seed}/{checkpoint}.tsv"
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
        unpack(checkpoint_model),
        tokens="results/activations/seed{seed}/{checkpoint}/tokens.parquet",
        attention="results/activations/seed{seed}/{checkpoint}/attention.parquet",
    output:
        "results/stats/seed{seed}/{checkpoint}/directionality.parquet",
    log:
        "logs/directionality/seed{seed}/{checkpoint}.log",
    benchmark:
        "results/benchmarks/directionality/seed{seed}/{checkpoint}.tsv"
    conda:
        "../envs/bertgeom.yaml"
    params:
        eig_tol=SETTINGS.get("patterns.eig_tol"),
    script:
        "../scripts/directionality.py"


rule match_heads:
    """Across seeds: per layer, every seed's heads matched one to one to the first seed's
    (Hungarian assignment on the gate-score vectors); the across-seed tables use it."""
    input:
        seed_files("results/stats/seed{seed}/{checkpoint}/gates.parquet"),
    output:
        HEAD_MATCHING,
    log:
        "logs/match_heads/{checkpoint}.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        reference_seed=SEEDS[0],
    script:
        "../scripts/match_heads.py"


rule gate_agreement:
    """Across seeds: agreement of the gate labels at the same (layer, head), after matching heads,
    and of each seed with the untrained null model (what matching alone gives); the modal label
    of each matched head; the share of each label per layer."""
    input:
        gates=seed_files("results/stats/seed{seed}/{checkpoint}/gates.parquet"),
        matching=HEAD_MATCHING,
        untrained="results/stats/null_model/gates.parquet",
    output:
        "results/stats/all_seeds/{checkpoint}/gate_agreement.parquet",
    log:
        "logs/gate_agreement/{checkpoint}.log",
    conda:
        "../envs/bertgeom.yaml"
    script:
        "../scripts/gate_agreement.py"


rule gate_counts:
    """Across seeds and checkpoints: how many heads carry each gate label, per checkpoint and seed
    (results/stats/all_seeds/gate_counts.tsv)."""
    input:
        gates=expand(
            "results/stats/seed{seed}/{checkpoint}/gates.parquet",
            **{"checkpoint": CHECKPOINTS},
            seed=SEEDS,
        ),
    output:
        GATE_COUNTS,
    log:
        "logs/gate_counts/gate_counts.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        checkpoints=[c for c in CHECKPOINTS for seed in SEEDS],
        seeds=[seed for c in CHECKPOINTS for seed in SEEDS],
    script:
        "../scripts/gate_counts.py"


# results/stats/all_seeds/{checkpoint}/{name}.parquet of rule aggregate_seeds would match these too.
ruleorder: gate_agreement > aggregate_seeds
ruleorder: match_heads > aggregate_seeds
