# Stage: figures. One rule per figure (catalogue: docs/figures.md): results/figures/<id>.png and
# .pdf, drawn by src/bertgeom/figures/<category>.py through scripts/figure.py. Captions: report/.


# ---- 1. Data ----------------------------------------------------------------------------------
rule fig_data_qc:
    input:
        qc="results/data/qc.tsv",
        code=figure_code("data"),
    output:
        png=report(
            "results/figures/data_qc.png",
            caption="../report/data_qc.rst",
            category="1. Data",
            subcategory="Data set",
        ),
        pdf="results/figures/data_qc.pdf",
    log:
        "logs/fig_data_qc/fig_data_qc.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("data_qc", classes=CLASSES),
    script:
        "../scripts/figure.py"


rule fig_kmer_occurrences:
    input:
        kmers="results/tokens/kmer_counts.parquet",
        code=figure_code("data"),
    output:
        png=report(
            "results/figures/kmer_occurrences.png",
            caption="../report/kmer_occurrences.rst",
            category="1. Data",
            subcategory="Tokens",
        ),
        pdf="results/figures/kmer_occurrences.pdf",
    log:
        "logs/fig_kmer_occurrences/fig_kmer_occurrences.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("kmer_occurrences"),
    script:
        "../scripts/figure.py"


# ---- 2. Classification --------------------------------------------------------------------------
rule fig_training_curves:
    input:
        logs=seed_files("results/models/seed{seed}/train_log.csv"),
        infos=seed_files("results/models/seed{seed}/training_info.json"),
        code=figure_code("classification"),
    output:
        png=report(
            "results/figures/training_curves.png",
            caption="../report/training_curves.rst",
            category="2. Classification",
            subcategory="Training",
        ),
        pdf="results/figures/training_curves.pdf",
    log:
        "logs/fig_training_curves/fig_training_curves.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("training_curves", seeds=SEEDS),
    script:
        "../scripts/figure.py"


rule fig_confusion_matrix:
    input:
        metrics=seed_files("results/eval/seed{seed}/metrics.json"),
        code=figure_code("classification"),
    output:
        png=report(
            "results/figures/confusion_matrix.png",
            caption="../report/confusion_matrix.rst",
            category="2. Classification",
            subcategory="Test split",
        ),
        pdf="results/figures/confusion_matrix.pdf",
    log:
        "logs/fig_confusion_matrix/fig_confusion_matrix.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("confusion_matrix", seeds=SEEDS),
    script:
        "../scripts/figure.py"


rule fig_per_class_f1:
    input:
        metrics=seed_files("results/eval/seed{seed}/metrics.json"),
        code=figure_code("classification"),
    output:
        png=report(
            "results/figures/per_class_f1.png",
            caption="../report/per_class_f1.rst",
            category="2. Classification",
            subcategory="Test split",
        ),
        pdf="results/figures/per_class_f1.pdf",
    log:
        "logs/fig_per_class_f1/fig_per_class_f1.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("per_class_f1", seeds=SEEDS, ci=SETTINGS.get("stats.ci")),
    script:
        "../scripts/figure.py"


rule metrics_table:
    input:
        metrics=seed_files("results/eval/seed{seed}/metrics.json"),
        code=figure_code("classification"),
    output:
        html=report(
            "results/figures/metrics_table.html",
            caption="../report/metrics_table.rst",
            category="2. Classification",
            subcategory="Test split",
        ),
        tsv="results/figures/metrics_table.tsv",
    log:
        "logs/metrics_table/metrics_table.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        seeds=SEEDS,
        ci=SETTINGS.get("stats.ci"),
    script:
        "../scripts/metrics_table.py"


# ---- 3. Cone index --------------------------------------------------------------------------------
rule fig_cone_stream:
    input:
        cone="results/stats/all_seeds/cone_index.parquet",
        code=figure_code("cone"),
    output:
        png=report(
            "results/figures/cone_stream.png",
            caption="../report/cone_stream.rst",
            category="3. Cone index",
            subcategory="Information stream",
        ),
        pdf="results/figures/cone_stream.pdf",
    log:
        "logs/fig_cone_stream/fig_cone_stream.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("cone_stream", ci=SETTINGS.get("stats.ci")),
    script:
        "../scripts/figure.py"


rule fig_cone_heads:
    input:
        cone="results/stats/all_seeds/cone_index.parquet",
        code=figure_code("cone"),
    output:
        png=report(
            "results/figures/cone_heads.png",
            caption="../report/cone_heads.rst",
            category="3. Cone index",
            subcategory="Attention heads",
        ),
        pdf="results/figures/cone_heads.pdf",
    log:
        "logs/fig_cone_heads/fig_cone_heads.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("cone_heads"),
    script:
        "../scripts/figure.py"


# ---- 4. Distribution ------------------------------------------------------------------------------
rule fig_pca_pareto:
    input:
        distribution="results/stats/all_seeds/distribution.parquet",
        code=figure_code("distribution"),
    output:
        png=report(
            "results/figures/pca_pareto.png",
            caption="../report/pca_pareto.rst",
            category="4. Distribution",
            subcategory="PCA",
        ),
        pdf="results/figures/pca_pareto.pdf",
    log:
        "logs/fig_pca_pareto/fig_pca_pareto.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("pca_pareto"),
    script:
        "../scripts/figure.py"


rule fig_embedding_pca:
    input:
        embedding=f"results/stats/seed{example_seed()}/embedding_2d.parquet",
        code=figure_code("distribution"),
    output:
        png=report(
            "results/figures/embedding_pca.png",
            caption="../report/embedding_pca.rst",
            category="4. Distribution",
            subcategory="2-D views",
        ),
        pdf="results/figures/embedding_pca.pdf",
    log:
        "logs/fig_embedding_pca/fig_embedding_pca.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("embedding_pca", classes=CLASSES, seed=example_seed()),
    script:
        "../scripts/figure.py"


rule fig_embedding_tsne:
    input:
        embedding=f"results/stats/seed{example_seed()}/embedding_2d.parquet",
        code=figure_code("distribution"),
    output:
        png=report(
            "results/figures/embedding_tsne.png",
            caption="../report/embedding_tsne.rst",
            category="4. Distribution",
            subcategory="2-D views",
        ),
        pdf="results/figures/embedding_tsne.pdf",
    log:
        "logs/fig_embedding_tsne/fig_embedding_tsne.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("embedding_tsne", classes=CLASSES, seed=example_seed()),
    script:
        "../scripts/figure.py"


rule fig_probe_silhouette:
    input:
        distribution="results/stats/all_seeds/distribution.parquet",
        code=figure_code("distribution"),
    output:
        png=report(
            "results/figures/probe_silhouette.png",
            caption="../report/probe_silhouette.rst",
            category="4. Distribution",
            subcategory="Class separation",
        ),
        pdf="results/figures/probe_silhouette.pdf",
    log:
        "logs/fig_probe_silhouette/fig_probe_silhouette.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("probe_silhouette", ci=SETTINGS.get("stats.ci")),
    script:
        "../scripts/figure.py"


# ---- 5. Attention patterns --------------------------------------------------------------------------
rule fig_gate_grid:
    input:
        agreement="results/stats/all_seeds/gate_agreement.parquet",
        code=figure_code("attention"),
    output:
        png=report(
            "results/figures/gate_grid.png",
            caption="../report/gate_grid.rst",
            category="5. Attention patterns",
            subcategory="Gates",
        ),
        pdf="results/figures/gate_grid.pdf",
    log:
        "logs/fig_gate_grid/fig_gate_grid.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("gate_grid"),
    script:
        "../scripts/figure.py"


rule fig_k90_violins:
    input:
        k90=f"results/stats/seed{example_seed()}/k90.parquet",
        code=figure_code("attention"),
    output:
        png=report(
            "results/figures/k90_violins.png",
            caption="../report/k90_violins.rst",
            category="5. Attention patterns",
            subcategory="K90",
        ),
        pdf="results/figures/k90_violins.pdf",
    log:
        "logs/fig_k90_violins/fig_k90_violins.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("k90_violins", seed=example_seed()),
    script:
        "../scripts/figure.py"


rule fig_attention_gallery:
    input:
        gates=f"results/stats/seed{example_seed()}/gates.parquet",
        class_attention=f"results/activations/seed{example_seed()}/class_attention.parquet",
        token_map="results/tokens/token_map.parquet",
        code=figure_code("attention"),
    output:
        png=report(
            "results/figures/attention_gallery.png",
            caption="../report/attention_gallery.rst",
            category="5. Attention patterns",
            subcategory="Gates",
        ),
        pdf="results/figures/attention_gallery.pdf",
    log:
        "logs/fig_attention_gallery/fig_attention_gallery.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params(
            "attention_gallery",
            classes=CLASSES,
            seed=example_seed(),
            gallery_class=SETTINGS.get("figures.gallery_class"),
        ),
    script:
        "../scripts/figure.py"


rule fig_attention_entropy:
    input:
        patterns=seed_files("results/stats/seed{seed}/attention_patterns.parquet"),
        code=figure_code("attention"),
    output:
        png=report(
            "results/figures/attention_entropy.png",
            caption="../report/attention_entropy.rst",
            category="5. Attention patterns",
            subcategory="Entropy",
        ),
        pdf="results/figures/attention_entropy.pdf",
    log:
        "logs/fig_attention_entropy/fig_attention_entropy.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("attention_entropy", seeds=SEEDS, ci=SETTINGS.get("stats.ci")),
    script:
        "../scripts/figure.py"


rule fig_domain_attention:
    input:
        domains=seed_files("results/stats/seed{seed}/domain_attention.parquet"),
        variants=resolve(config["data"]["variants"]),
        code=figure_code("attention"),
    output:
        png=report(
            "results/figures/domain_attention.png",
            caption="../report/domain_attention.rst",
            category="5. Attention patterns",
            subcategory="Spike domains",
        ),
        pdf="results/figures/domain_attention.pdf",
    log:
        "logs/fig_domain_attention/fig_domain_attention.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("domain_attention", seeds=SEEDS),
    script:
        "../scripts/figure.py"


# ---- 6. Directionality ------------------------------------------------------------------------------
rule fig_directionality_index:
    input:
        directionality=seed_files("results/stats/seed{seed}/directionality.parquet"),
        code=figure_code("directionality"),
    output:
        png=report(
            "results/figures/directionality_index.png",
            caption="../report/directionality_index.rst",
            category="6. Directionality",
            subcategory="Index",
        ),
        pdf="results/figures/directionality_index.pdf",
    log:
        "logs/fig_directionality_index/fig_directionality_index.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("directionality_index", seeds=SEEDS),
    script:
        "../scripts/figure.py"


rule fig_directionality_spectrum:
    input:
        directionality=seed_files("results/stats/seed{seed}/directionality.parquet"),
        code=figure_code("directionality"),
    output:
        png=report(
            "results/figures/directionality_spectrum.png",
            caption="../report/directionality_spectrum.rst",
            category="6. Directionality",
            subcategory="Spectrum",
        ),
        pdf="results/figures/directionality_spectrum.pdf",
    log:
        "logs/fig_directionality_spectrum/fig_directionality_spectrum.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params(
            "directionality_spectrum", seeds=SEEDS, ci=SETTINGS.get("stats.ci")
        ),
    script:
        "../scripts/figure.py"


rule fig_directionality_original:
    input:
        directionality=seed_files("results/stats/seed{seed}/directionality.parquet"),
        code=figure_code("directionality"),
    output:
        png=report(
            "results/figures/directionality_original.png",
            caption="../report/directionality_original.rst",
            category="6. Directionality",
            subcategory="Original code",
        ),
        pdf="results/figures/directionality_original.pdf",
    log:
        "logs/fig_directionality_original/fig_directionality_original.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("directionality_original", seeds=SEEDS),
    script:
        "../scripts/figure.py"


# ---- 7. Open set --------------------------------------------------------------------------------
rule fig_open_set:
    input:
        summaries=seed_files("results/open_set/seed{seed}/summary.tsv"),
        code=figure_code("openset"),
    output:
        png=report(
            "results/figures/open_set.png",
            caption="../report/open_set.rst",
            category="7. Open set",
            subcategory="Unassigned",
        ),
        pdf="results/figures/open_set.pdf",
    log:
        "logs/fig_open_set/fig_open_set.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("open_set", seeds=SEEDS),
    script:
        "../scripts/figure.py"


rule fig_reliability:
    input:
        calibrations=seed_files("results/open_set/seed{seed}/calibration.json"),
        code=figure_code("openset"),
    output:
        png=report(
            "results/figures/reliability.png",
            caption="../report/reliability.rst",
            category="7. Open set",
            subcategory="Calibration",
        ),
        pdf="results/figures/reliability.pdf",
    log:
        "logs/fig_reliability/fig_reliability.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **figure_params("reliability", seeds=SEEDS),
    script:
        "../scripts/figure.py"


rule open_set_table:
    input:
        summaries=seed_files("results/open_set/seed{seed}/summary.tsv"),
        code=figure_code("openset"),
    output:
        html=report(
            "results/figures/open_set_table.html",
            caption="../report/open_set_table.rst",
            category="7. Open set",
            subcategory="Unassigned",
        ),
        tsv="results/figures/open_set_table.tsv",
    log:
        "logs/open_set_table/open_set_table.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        seeds=SEEDS,
    script:
        "../scripts/open_set_table.py"
