# Stage: figures. One rule fig_<id> per entry of the figure registry
# (src/bertgeom/figures/registry.py; catalogue: docs/figures.md): results/figures/<id>.png and
# .pdf, drawn by the entry's function through scripts/figure.py, caption report/<id>.rst.


for figure in FIGURES:

    rule:
        name:
            f"fig_{figure.id}"
        input:
            **figure_inputs(figure),
        output:
            png=report(
                f"results/figures/{figure.id}.png",
                caption=f"../{figure.caption}",
                category=figure.category,
                subcategory=figure.subcategory,
            ),
            pdf=f"results/figures/{figure.id}.pdf",
        log:
            f"logs/fig_{figure.id}/fig_{figure.id}.log",
        conda:
            "../envs/bertgeom.yaml"
        params:
            **figure_params(figure),
        script:
            "../scripts/figure.py"


# The report's metrics table (not a figure: HTML and TSV).
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
