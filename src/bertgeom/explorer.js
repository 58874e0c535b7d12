// Glue of the explorer page (bertgeom.explorer_page): fills the selectors, swaps the figures drawn in
// Python, decodes the embedded matrices (zlib, log10 codes; a sequence's codes are stored as their
// difference from its class average's, bertgeom.explorer.residual_codes) into the matrix and model views.
"use strict";
const DATA = JSON.parse(document.getElementById("explorer-data").textContent);
const $ = (id) => document.getElementById(id);
const state = { checkpoint: null, seed: DATA.example_seed, measure: "gate", source: null, layer: null, head: null };
const CONFIG = { responsive: true, displaylogo: false };

function fill(select, items, chosen) {
  select.replaceChildren(...items.map(([value, text]) => new Option(text, value, false, value === chosen)));
}

function view() {
  return DATA.views[state.checkpoint][state.seed];
}

async function inflate(b64) {  // -> Uint8Array of the stored codes, row-major [query, key]
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function size(source) {  // positions (or pooled blocks) on each axis of the source's matrices
  return DATA.axes[source.axis].labels.length;
}

async function decode(v, source, key) {  // -> log10 codes of one head's matrix (bertgeom.explorer.restore_codes)
  const codes = await inflate(v.matrices[source.id][key]);
  const base = source.base && v.sources.find((s) => s.id === source.base);
  if (!base) return codes;
  const baseCodes = await decode(v, base, key);
  const n = size(source), m = size(base), k = Math.min(n, m);
  for (let q = 0; q < k; q++) {
    for (let i = 0; i < k; i++) codes[q * n + i] = (codes[q * n + i] + baseCodes[q * m + i]) % DATA.levels;
  }
  return codes;
}

function logWeight(code) {  // the inverse of bertgeom.explorer.quantise
  return Math.log10(DATA.floor) * (1 - code / (DATA.levels - 1));
}

function rows(codes, n, withText) {
  const z = [], text = [];
  for (let q = 0; q < n; q++) {
    const row = Array.from(codes.subarray(q * n, (q + 1) * n), logWeight);
    z.push(row);
    if (withText) text.push(row.map((v, i) => (codes[q * n + i] === 0 ? "<1e-4" : (10 ** v).toPrecision(2))));
  }
  return { z, text };
}

async function draw(id, data, layout) {  // a figure where a message may have been
  if (!$(id).classList.contains("js-plotly-plot")) $(id).textContent = "";
  await Plotly.react(id, data, { ...layout, template: DATA.template }, CONFIG);
}

function message(id, text) {
  Plotly.purge(id);
  $(id).textContent = text;
}

function showEmpty(reason) {
  $("empty").hidden = !reason;
  $("empty").textContent = reason || "";
  $("views").hidden = Boolean(reason);
}

function chooseCheckpoint() {  // the last checkpoint (training order) with data for the chosen seed
  const ok = DATA.checkpoints.filter((c) => !DATA.views[c][state.seed].missing);
  return ok.length ? ok[ok.length - 1] : DATA.checkpoints[DATA.checkpoints.length - 1];
}

async function render() {
  const v = view();
  showEmpty(v.missing);
  $("views").dataset.checkpoint = state.checkpoint;
  $("views").dataset.seed = state.seed;
  if (v.missing) return;
  const sources = v.sources.map((s) => [s.id, s.name]);
  if (!v.sources.some((s) => s.id === state.source)) state.source = v.sources.length ? v.sources[0].id : null;
  fill($("source"), sources, state.source);
  if (state.layer === null || !v.layers.includes(state.layer) || state.head >= v.heads) {
    state.layer = v.layers[0];
    state.head = 0;
  }
  const grid = v.grids[state.measure];
  await draw("grid", grid.data, grid.layout);
  await renderHead();
}

async function renderHead() {
  const v = view();
  const key = `${state.layer},${state.head}`;
  const box = { type: "rect", x0: state.head - 0.5, x1: state.head + 0.5, y0: state.layer - 0.5, y1: state.layer + 0.5 };
  await Plotly.relayout("grid", { shapes: [{ ...box, line: { color: "#E69F00", width: 4 } }] });  // the chosen head
  $("grid").dataset.selected = key;
  const k90 = v.k90[key];
  if (k90) await draw("k90", k90.data, k90.layout);
  else message("k90", `No K90 rows for layer ${state.layer}, head ${state.head}.`);
  const source = v.sources.find((s) => s.id === state.source);
  if (!source) {
    message("matrix", "No attention matrix in this checkpoint and seed.");
    return;
  }
  const axis = DATA.axes[source.axis];
  const n = size(source);
  const { z, text } = rows(await decode(v, source, key), n, true);
  const trace = { ...DATA.matrix_trace, x: axis.labels, y: axis.labels, z, text };
  const layout = { ...axis.layout, title: { text: source.titles[key] } };
  await draw("matrix", [trace], layout);
  Object.assign($("matrix").dataset, { layer: state.layer, head: state.head, source: source.id, n });
  renderTopKeys(v.top[source.id][key]);
  await renderModelView(v, source, n);
}

function renderTopKeys(keys) {
  const head = "<tr><th>position</th><th>share of mass</th><th>spike aa</th><th>domains</th><th>lineage mutations</th></tr>";
  const cell = (x) => `<td>${String(x ?? "").replace(/[<&]/g, (c) => (c === "<" ? "&lt;" : "&amp;"))}</td>`;
  const body = keys.map(([position, share, aa, domains, mutations]) => `<tr>${cell(position)}` +
    `${cell(share === null ? "NaN" : share.toFixed(3))}${cell(aa)}${cell(domains)}${cell(mutations)}</tr>`);
  $("topkeys").innerHTML = `<table>${head}${body.join("")}</table>`;
}

async function renderModelView(v, source, n) {
  const template = DATA.model_view[String(v.heads)];
  const data = [];
  for (let h = 0; h < v.heads; h++) {
    const key = `${state.layer},${h}`;
    data.push({ ...template.data[h], z: v.matrices[source.id][key] ? rows(await decode(v, source, key), n, false).z : null });
  }
  const title = `Model view: layer ${state.layer}, every head (${source.name}); click a thumbnail`;
  await draw("modelview", data, { ...template.layout, title: { text: title } });
}

function setup() {
  state.checkpoint = chooseCheckpoint();
  fill($("checkpoint"), DATA.checkpoints.map((c) => [c, c]), state.checkpoint);
  fill($("seed"), DATA.seeds.map((s) => [s, s === DATA.example_seed ? `${s} (full resolution)` : s]), state.seed);
  fill($("measure"), Object.entries(DATA.measures), state.measure);
  for (const name of ["checkpoint", "seed", "measure", "source"]) {
    $(name).addEventListener("change", (event) => {
      state[name] = event.target.value;
      render();
    });
  }
  Plotly.newPlot("cone", DATA.cone.data, { ...DATA.cone.layout, template: DATA.template }, CONFIG);
  for (const id of ["grid", "modelview"]) Plotly.newPlot(id, [], {}, CONFIG);  // so that .on exists
  $("grid").on("plotly_click", (event) => {
    state.layer = event.points[0].y;
    state.head = event.points[0].x;
    renderHead();
  });
  $("modelview").on("plotly_click", (event) => {
    state.head = event.points[0].curveNumber;
    renderHead();
  });
  render();
}

setup();
