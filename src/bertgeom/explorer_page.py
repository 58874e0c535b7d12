"""The explorer page: one self-contained HTML file (plotly.js inlined, data embedded, no network).

Python draws every figure it can in advance (head grids, K90 histograms, cone index; templates of the
matrix views); the glue script (explorer.js, beside this module) only swaps figures and fills the
matrix views with the embedded matrices when the user picks a checkpoint, seed, source or head.
What is embedded, and how it is reduced to stay small (docs/figures.md, "Explorer"):
- attention matrices of the example seed at full resolution: the class average of every class and
  the first FULL_SEQUENCES sequences of each class, every head and checkpoint; other seeds: the same
  sources pooled by POOL x POOL blocks. Weights are stored as log10 codes over [FLOOR, 1],
  zlib-compressed, base64, with the finest level count of LEVELS that keeps the page under
  MAX_PAGE_BYTES; top keys are computed from the unquantised matrices;
- K90: a histogram (K90_BINS bins) per head of every query row of the subset.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import zlib
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from bertgeom import __version__
from bertgeom.explorer import (FLOOR, LEVELS, MAX_PAGE_BYTES, MEASURES, Axis, attention_layout, attention_trace,
                               head_grid_figure, k90_figure, model_view_figure, pool_matrix, quantise,
                               token_axis)  # fmt: skip
from bertgeom.explorer_paths import results_root
from bertgeom.explorer_run import Run, matrix_title
from bertgeom.io import write_text

log = logging.getLogger(__name__)
SCRIPT = Path(__file__).with_name("explorer.js")
STYLE = """body{font-family:system-ui,sans-serif;margin:1em 2em;color:#222}
.controls label{margin-right:1.2em} .empty{background:#fff4e5;border:1px solid #e0a040;padding:.8em;margin:.6em 0}
.row{display:flex;flex-wrap:wrap;gap:1em} .row>div{flex:1 1 480px;min-width:420px}
table{border-collapse:collapse;font-size:90%} td,th{border-bottom:1px solid #ddd;padding:2px 8px;text-align:left}
.note{color:#555;font-size:90%}"""


def encode_matrix(matrix: np.ndarray, levels: int) -> str:
    """base64 of the zlib-compressed quantised matrix (row-major uint8 codes; explorer.js decodes)."""
    return base64.b64encode(zlib.compress(quantise(matrix, levels).tobytes(), 9)).decode("ascii")


def figure_json(fig) -> dict:
    return json.loads(pio.to_json(fig, validate=False))


def view_data(run: Run, checkpoint: str, seed: int, axes: dict, levels: int) -> dict:
    """Everything the page shows of one checkpoint and seed, or {"missing": why}."""
    reason = run.missing(checkpoint, seed)
    if reason:
        return {"missing": reason}
    values = run.head_values(checkpoint, seed)
    grids = {m: figure_json(head_grid_figure(values, m, f"{MEASURES[m]}: checkpoint {checkpoint}, seed {seed}"))
             for m in MEASURES}  # fmt: skip
    k90 = {f"{layer},{head}": figure_json(k90_figure(x, y, f"K90 of layer {layer}, head {head} (subset, every row)"))
           for (layer, head), (x, y) in run.k90(checkpoint, seed).items()}  # fmt: skip
    factor, sources, matrices, top = run.factor(seed), [], {}, {}
    for source in run.sources(checkpoint, seed).values():
        key = f"{source.n}/{factor}"
        if key not in axes:
            axis = token_axis(run.token_map, source.n, factor)
            axes[key] = {"labels": axis.labels, "layout": figure_json(go.Figure(layout=attention_layout(axis, "")))["layout"]}
        sources.append({"id": source.id, "name": source.name, "axis": key,
                        "titles": {f"{lh[0]},{lh[1]}": matrix_title(checkpoint, seed, source, *lh, factor)
                                   for lh in source.matrices}})  # fmt: skip
        matrices[source.id] = {f"{l},{h}": encode_matrix(pool_matrix(m, factor), levels) for (l, h), m in source.matrices.items()}
        top[source.id] = {f"{l},{h}": run.describe(source, l, h) for l, h in source.matrices}
    return {"layers": sorted(int(x) for x in values["layer"].unique()), "heads": int(values["head"].max()) + 1,
            "grids": grids, "k90": k90, "sources": sources, "matrices": matrices, "top": top}


def page_data(run: Run, levels: int) -> dict:
    axes: dict = {}
    views = {c: {str(s): view_data(run, c, s, axes, levels) for s in run.seeds} for c in run.checkpoints}
    heads = {v["heads"] for by_seed in views.values() for v in by_seed.values() if "heads" in v}
    return {"checkpoints": run.checkpoints, "seeds": [str(s) for s in run.seeds], "example_seed": str(run.example_seed),
            "measures": MEASURES, "levels": levels, "floor": FLOOR, "views": views, "axes": axes,
            "cone": figure_json(run.cone()),
            "matrix_trace": figure_json(go.Figure(attention_trace(np.zeros((1, 1)), Axis(["-"], []))))["data"][0],
            "model_view": {str(n): figure_json(model_view_figure([None] * n, "")) for n in heads}}  # fmt: skip


def render_page(data: dict, title: str) -> str:
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style>
<script>{get_plotlyjs()}</script></head><body>
<h1>{html.escape(title)}</h1>
<div class="controls">
<label>checkpoint <select id="checkpoint"></select></label><label>seed <select id="seed"></select></label>
<label>head grid colour <select id="measure"></select></label><label>matrix <select id="source"></select></label>
</div>
<div id="empty" class="empty" hidden></div>
<div id="views"><div class="row"><div id="grid"></div><div id="k90"></div></div>
<p class="note">Click a head of the grid (or a thumbnail of the model view) to show its attention matrix.</p>
<div class="row"><div id="matrix"></div><div><h3>Top attended keys</h3><div id="topkeys"></div></div></div>
<div id="modelview"></div></div>
<div id="cone"></div>
<p class="note">Matrices of seed {html.escape(data["example_seed"])} are at full resolution, weights read
on a log scale of {data["levels"]} levels over [1e-4, 1] (neighbouring levels differ by
x{10 ** (4 / (data["levels"] - 1)):.2f}, the finest that keeps the page under 30 MB); other seeds are pooled
(mean over blocks of positions). Positions are mapped to the reference-length spike.</p>
<script type="application/json" id="explorer-data">{payload}</script>
<script>{SCRIPT.read_text()}</script>
</body></html>
"""


def write_explorer(*, token_map, output, seeds, checkpoints, example_seed, variants, top_k) -> int:
    """Write the explorer page of the run whose results folder holds `token_map`; returns its size."""
    run = Run(results_root(token_map), list(seeds), list(checkpoints), example_seed, Path(variants), top_k)
    for levels in LEVELS:  # the finest weight resolution that fits
        text = render_page(page_data(run, levels), f"bert-geometry explorer (bertgeom {__version__})")
        size = len(text.encode())
        log.info("explorer page with %d weight levels: %.1f MB", levels, size / 1e6)
        if size <= MAX_PAGE_BYTES:
            break
    else:
        log.warning("explorer page over %.0f MB even at %d levels", MAX_PAGE_BYTES / 1e6, LEVELS[-1])
    write_text(output, text)
    return size
