"""The explorer page: one self-contained HTML file (plotly.js inlined, data embedded, no network).

Python draws every figure it can in advance (head grids, K90 histograms, cone index; templates of the
matrix views); the glue script (explorer.js, beside this module) only swaps figures and fills the
matrix views with the embedded matrices when the user picks a checkpoint, seed, source or head.
What is embedded, and how it is reduced to stay small (docs/figures.md, "Explorer"):
- attention matrices at full resolution: the class average of every class, every head and checkpoint
  of the example seed, and the first FULL_SEQUENCES sequences of each class at its last analysed
  checkpoint; every other matrix pooled by POOL x POOL blocks (Run.factor). Weights are stored as
  log10 codes over [FLOOR, 1], a sequence's codes as their difference from its class average's
  (residual_codes), zlib-compressed, base64, with the finest level count of LEVELS that keeps the page
  under MAX_PAGE_BYTES; top keys are computed from the unquantised matrices;
- K90: a histogram (K90_BINS bins) per head of every query row of the subset;
- figures without their template (plotly's default, embedded once).
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
from bertgeom.explorer import (FLOOR, LEVELS, MAX_PAGE_BYTES, MEASURES, POOL, Axis, attention_layout, attention_trace,
                               head_grid_figure, k90_figure, model_view_figure, pool_matrix, quantise, residual_codes,
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


def encode_codes(codes: np.ndarray) -> str:
    """base64 of the zlib-compressed row-major uint8 codes (explorer.js decodes)."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(codes, dtype=np.uint8).tobytes(), 6)).decode("ascii")


def figure_json(fig) -> dict:
    """The figure as plotly.js reads it, without its template (the page embeds plotly's once)."""
    data = json.loads(pio.to_json(fig, validate=False))
    data.get("layout", {}).pop("template", None)
    return data


def view_data(run: Run, checkpoint: str, seed: int, axes: dict) -> tuple[dict, dict]:
    """Everything the page shows of one checkpoint and seed but the matrices, or {"missing": why};
    and the matrices at each level count ({levels: view_matrices}; {} when missing)."""
    reason = run.missing(checkpoint, seed)
    if reason:
        return {"missing": reason}, {}
    values = run.head_values(checkpoint, seed)
    grids = {m: figure_json(head_grid_figure(values, m, f"{MEASURES[m]}: checkpoint {checkpoint}, seed {seed}"))
             for m in MEASURES}  # fmt: skip
    k90 = {f"{layer},{head}": figure_json(k90_figure(x, y, f"K90 of layer {layer}, head {head} (subset, every row)"))
           for (layer, head), (x, y) in run.k90(checkpoint, seed).items()}  # fmt: skip
    read = run.sources(checkpoint, seed)
    averages = {s.class_name: s.id for s in read.values() if s.is_average}
    sources, top, shown = [], {}, {}
    for source in read.values():
        factor = run.factor(checkpoint, seed, source)
        key = f"{source.n}/{factor}"
        if key not in axes:
            axis = token_axis(run.token_map, source.n, factor)
            axes[key] = {"labels": axis.labels, "layout": figure_json(go.Figure(layout=attention_layout(axis, "")))["layout"]}
        base = averages.get(source.class_name)
        same_axes = base is not None and run.factor(checkpoint, seed, read[base]) == factor
        sources.append({"id": source.id, "name": source.name, "axis": key,
                        "base": base if same_axes and not source.is_average else None,
                        "titles": {f"{lh[0]},{lh[1]}": matrix_title(checkpoint, seed, source, *lh, factor)
                                   for lh in source.matrices}})  # fmt: skip
        top[source.id] = {f"{l},{h}": [[k["position"], None if k["share"] is None else round(k["share"], 4), k["aa"],
                                        k["domains"], k["mutations"]] for k in run.describe(source, l, h)]
                          for l, h in source.matrices}  # fmt: skip
        shown[source.id] = {lh: pool_matrix(m, factor) for lh, m in source.matrices.items()}
    view = {"layers": sorted(int(x) for x in values["layer"].unique()), "heads": int(values["head"].max()) + 1,
            "grids": grids, "k90": k90, "sources": sources, "top": top}
    return view, {levels: view_matrices(shown, sources, levels) for levels in LEVELS}


def view_matrices(shown: dict, sources: list[dict], levels: int) -> dict:
    """{source id: {"layer,head": encoded codes}} at `levels`, a sequence's against its base's codes.
    shown: {source id: {(layer, head): matrix as shown}}."""
    codes = {s: {lh: quantise(m, levels) for lh, m in matrices.items()} for s, matrices in shown.items()}
    return {s["id"]: {f"{l},{h}": encode_codes(c if s["base"] is None else residual_codes(c, codes[s["base"]][(l, h)], levels))
                      for (l, h), c in codes[s["id"]].items()} for s in sources}  # fmt: skip


def page_data(run: Run) -> tuple[dict, dict]:
    """The page's data but the matrices; and the matrices {levels: {checkpoint: {seed: view_matrices}}}
    of the views that have data."""
    axes: dict = {}
    views, matrices = {}, {levels: {} for levels in LEVELS}
    for c in run.checkpoints:
        views[c] = {}
        for s in run.seeds:
            views[c][str(s)], encoded = view_data(run, c, s, axes)
            for levels, by_source in encoded.items():
                matrices[levels].setdefault(c, {})[str(s)] = by_source
    heads = {v["heads"] for by_seed in views.values() for v in by_seed.values() if "heads" in v}
    template = json.loads(pio.to_json(go.Figure(), validate=False))["layout"]["template"]
    data = {"checkpoints": run.checkpoints, "seeds": [str(s) for s in run.seeds], "example_seed": str(run.example_seed),
            "full_checkpoint": run.full_checkpoint(), "pool": POOL, "measures": MEASURES, "floor": FLOOR,
            "views": views, "axes": axes, "template": template, "cone": figure_json(run.cone()),
            "matrix_trace": figure_json(go.Figure(attention_trace(np.zeros((1, 1)), Axis(["-"], []))))["data"][0],
            "model_view": {str(n): figure_json(model_view_figure([None] * n, "")) for n in heads}}  # fmt: skip
    return data, matrices


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
<p class="note">Full resolution: the class averages of seed {html.escape(data["example_seed"])} at every
checkpoint and its sequences at checkpoint {html.escape(str(data["full_checkpoint"]))}; every other matrix
is pooled (mean over {data["pool"]} x {data["pool"]} blocks of positions; its title says so). Weights are read
on a log scale of {data["levels"]} levels over [1e-4, 1] (neighbouring levels differ by
x{10 ** (4 / (data["levels"] - 1)):.2f}: the finest that keeps the page under 30 MB, else the coarsest). Positions are mapped
to the reference-length spike.</p>
<script type="application/json" id="explorer-data">{payload}</script>
<script>{SCRIPT.read_text()}</script>
</body></html>
"""


def write_explorer(*, token_map, output, seeds, checkpoints, example_seed, variants, top_k) -> int:
    """Write the explorer page of the run whose results folder holds `token_map`; returns its size."""
    run = Run(results_root(token_map), list(seeds), list(checkpoints), example_seed, Path(variants), top_k)
    data, matrices = page_data(run)
    title = f"bert-geometry explorer (bertgeom {__version__})"
    fixed = len(render_page({**data, "levels": LEVELS[0]}, title).encode())
    for levels in LEVELS:  # the finest weight resolution that fits
        size = fixed + sum(len(',"matrices":' + json.dumps(by_source, separators=(",", ":")))
                           for by_seed in matrices[levels].values() for by_source in by_seed.values())  # fmt: skip
        log.info("explorer page with %d weight levels: %.1f MB", levels, size / 1e6)
        if size <= MAX_PAGE_BYTES:
            break
    else:
        log.warning("explorer page over %.0f MB even at %d levels", MAX_PAGE_BYTES / 1e6, LEVELS[-1])
    for c, by_seed in matrices[levels].items():
        for s, by_source in by_seed.items():
            data["views"][c][s]["matrices"] = by_source
    text = render_page({**data, "levels": levels}, title)
    write_text(output, text)
    log.info("explorer page written: %d weight levels, %.1f MB", levels, len(text.encode()) / 1e6)
    return len(text.encode())
