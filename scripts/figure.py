"""Every figure rule (rules/figures.smk): params.figure names the figure, the other params its options."""

from bertgeom.figures.draw import draw_figure
from bertgeom.io import job_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0], outputs=smk.output):
    params = dict(smk.params.items())
    draw_figure(
        figure_id=params.pop("figure"),
        inputs=dict(smk.input.items()),
        options={key: value for key, value in params.items() if key not in ("dpi", "context", "source")},
        png=smk.output.png,
        pdf=smk.output.pdf,
        dpi=params["dpi"],
        context=params["context"],
        source=params["source"],
    )
