# Stage: geometry statistics (cone index, data distribution, across-seed aggregation).
# Library: src/bertgeom/stats/{cone,distribution,aggregate}.py; tables: docs/methods.md, "Geometry statistics".


rule cone_index:
    """Per seed: the cone index (ours and reference-compatible) and the anisotropy measures beside
    it, per sequence, class and test set, for every layer, stage, head and attention map.
    """
    input:
        summary="results/activations/seed{seed}/{checkpoint}/summary.parquet",
        heads="results/activations/seed{seed}/{checkpoint}/heads.parquet",
        attention_summary="results/activations/seed{seed}/{checkpoint}/attention_summary.parquet",
        tokens="results/activations/seed{seed}/{checkpoint}/tokens.parquet",
    output:
        "results/stats/seed{seed}/{checkpoint}/cone_index.parquet",
    log:
        "logs/cone_index/seed{seed}/{checkpoint}.log",
    benchmark:
        "results/benchmarks/cone_index/seed{seed}/{checkpoint}.tsv"
    conda:
        "../envs/bertgeom.yaml"
    params:
        classes=CLASSES,
        outlier_sigma=SETTINGS.get("stats.outlier_sigma"),
        stats_run=SETTINGS.execution("stats"),
    script:
        "../scripts/cone_index.py"


rule distribution:
    """Per seed: PCA, linear probe, silhouette, norms and per-dimension moments of the [CLS] and
    mean-pooled vectors per layer and stage; 2-D PCA and t-SNE coordinates for the scatter plots.
    One thread: seeds run side by side and the clouds are small; at paper scale a profile's
    set-threads gives BLAS (PCA, probe, silhouette) more, t-SNE stays on one OpenMP thread.
    """
    input:
        summary="results/activations/seed{seed}/{checkpoint}/summary.parquet",
    output:
        distribution="results/stats/seed{seed}/{checkpoint}/distribution.parquet",
        embedding="results/stats/seed{seed}/{checkpoint}/embedding_2d.parquet",
    log:
        "logs/distribution/seed{seed}/{checkpoint}.log",
    benchmark:
        "results/benchmarks/distribution/seed{seed}/{checkpoint}.tsv"
    conda:
        "../envs/bertgeom.yaml"
    threads: 1
    params:
        classes=CLASSES,
        stats={
            key: SETTINGS.get(f"stats.{key}")
            for key in (
                "distribution_stages",
                "outlier_sigma",
                "pca_components",
                "probe_folds",
                "tsne_max_points",
                "tsne_perplexity",
            )
        },
        stats_run=SETTINGS.execution("stats"),
    script:
        "../scripts/distribution.py"


rule aggregate_seeds:
    """Any per-seed stats table (STATS_TABLES) of a checkpoint: mean and t interval at stats.ci across seeds."""
    input:
        unpack(stats_seed_tables),
    output:
        "results/stats/all_seeds/{checkpoint}/{name}.parquet",
    log:
        "logs/aggregate_seeds/{checkpoint}/{name}.log",
    wildcard_constraints:
        name=r"[A-Za-z0-9_]+",
    conda:
        "../envs/bertgeom.yaml"
    params:
        ci=SETTINGS.get("stats.ci"),
    script:
        "../scripts/aggregate_seeds.py"
