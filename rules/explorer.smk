# Stage: explorer. One self-contained interactive page (Plotly, data embedded, opens from disk):
# head grids, attention matrices, K90, cone index per checkpoint, model view. Library:
# src/bertgeom/explorer.py, explorer_run.py, explorer_page.py, explorer.js; docs/figures.md, "Explorer".


rule explorer:
    """The attention and geometry explorer of every seed and analysed checkpoint."""
    input:
        unpack(explorer_inputs),
    output:
        "results/explorer/index.html",
    log:
        "logs/explorer/explorer.log",
    conda:
        "../envs/bertgeom.yaml"
    params:
        **explorer_params(),
    script:
        "../scripts/explorer.py"
