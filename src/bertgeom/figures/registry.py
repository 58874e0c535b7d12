"""The figure registry: one entry per figure; rules/figures.smk makes rule fig_<id> from each entry.

Adding a figure (docs/figures.md, "Adding a figure"): a `Figure(...)` below, its drawing function
`make_<id>(input, params) -> matplotlib Figure` in the module `draw` names, its caption
report/<id>.rst and its row in docs/figures.md. Rule fig_<id> writes results/figures/<id>.png and
.pdf; its inputs are `inputs` and the drawing module and theme.py (editing a module reruns its
figures only). This module imports nothing heavy: the workflow reads it every time it starts.

Input patterns: "{seed}" stands for every seed of train.seeds and "{checkpoint}" for every analysed
checkpoint (bertgeom.checkpoints.analysed: init, mlm, finetuned in that order); with either, the
input is a list (checkpoint-major when both, each in its order). "{example_seed}" stands for the
seed the single-model figures show (figures.example_seed, else the first seed); "config:<key>" is
the file a config key names (e.g. "config:data.variants"). A pattern naming a checkpoint as a
path level (".../finetuned/...") makes the figure exist only when that checkpoint is analysed;
`init` makes it exist only with that model.init (e.g. the masked-LM curves: mlm).
Params: {name the drawing function reads as params.<name>: config key}; "figures.example_seed"
gives that seed, "activations.checkpoints" the analysed checkpoints. Every figure also gets
figures.dpi, figures.context and data.source.
"""

from __future__ import annotations

import importlib
import string
from dataclasses import dataclass, field
from typing import Callable

from bertgeom.checkpoints import CHECKPOINTS

CONFIG_FILE = "config:"
FIELDS = ("seed", "example_seed", "checkpoint")


@dataclass(frozen=True)
class Figure:
    """One registry entry (the fields: docs/figures.md, "Adding a figure")."""

    id: str  # rule fig_<id>, results/figures/<id>.png and .pdf, caption report/<id>.rst
    draw: str  # "<module>.<function>" of bertgeom.figures
    category: str  # the report's category ("5. Attention patterns") and subcategory ("Gates")
    subcategory: str
    inputs: dict[str, str]  # name -> path pattern (module docstring)
    params: dict[str, str] = field(default_factory=dict)  # name -> config key
    init: str | None = None  # the figure exists only with this model.init

    @property
    def needs(self) -> set[str]:
        """The checkpoints whose files the figure reads by name (path levels of its patterns)."""
        return {part for pattern in self.inputs.values() for part in pattern.split("/") if part in CHECKPOINTS}

    @property
    def module(self) -> str:
        return self.draw.split(".")[0]

    @property
    def caption(self) -> str:
        return f"report/{self.id}.rst"


FIGURES = [
    # ---- 1. Data
    Figure("data_qc", "data.make_data_qc", "1. Data", "Data set",
           inputs={"qc": "results/data/qc.tsv"},
           params={"classes": "classes"}),
    Figure("kmer_occurrences", "data.make_kmer_occurrences", "1. Data", "Tokens",
           inputs={"kmers": "results/tokens/kmer_counts.parquet"}),
    # ---- 2. Classification
    Figure("training_curves", "classification.make_training_curves", "2. Classification", "Training",
           inputs={"logs": "results/models/seed{seed}/train_log.csv",
                   "infos": "results/models/seed{seed}/training_info.json"},
           params={"seeds": "train.seeds"}),
    Figure("confusion_matrix", "classification.make_confusion_matrix", "2. Classification", "Test split",
           inputs={"metrics": "results/eval/seed{seed}/metrics.json"},
           params={"seeds": "train.seeds"}),
    Figure("per_class_f1", "classification.make_per_class_f1", "2. Classification", "Test split",
           inputs={"metrics": "results/eval/seed{seed}/metrics.json"},
           params={"seeds": "train.seeds", "ci": "stats.ci"}),
    # ---- 3. Cone index
    Figure("cone_stream", "cone.make_cone_stream", "3. Cone index", "Information stream",
           inputs={"cone": "results/stats/all_seeds/finetuned/cone_index.parquet"},
           params={"ci": "stats.ci"}),
    Figure("cone_heads", "cone.make_cone_heads", "3. Cone index", "Attention heads",
           inputs={"cone": "results/stats/all_seeds/finetuned/cone_index.parquet"}),
    # ---- 4. Distribution
    Figure("pca_pareto", "distribution.make_pca_pareto", "4. Distribution", "PCA",
           inputs={"distribution": "results/stats/all_seeds/finetuned/distribution.parquet"}),
    Figure("embedding_pca", "distribution.make_embedding_pca", "4. Distribution", "2-D views",
           inputs={"embedding": "results/stats/seed{example_seed}/finetuned/embedding_2d.parquet"},
           params={"classes": "classes", "seed": "figures.example_seed"}),
    Figure("embedding_tsne", "distribution.make_embedding_tsne", "4. Distribution", "2-D views",
           inputs={"embedding": "results/stats/seed{example_seed}/finetuned/embedding_2d.parquet"},
           params={"classes": "classes", "seed": "figures.example_seed"}),
    Figure("probe_silhouette", "distribution.make_probe_silhouette", "4. Distribution", "Class separation",
           inputs={"distribution": "results/stats/all_seeds/finetuned/distribution.parquet"},
           params={"ci": "stats.ci"}),
    # ---- 5. Attention patterns
    Figure("gate_grid", "attention.make_gate_grid", "5. Attention patterns", "Gates",
           inputs={"agreement": "results/stats/all_seeds/finetuned/gate_agreement.parquet",
                   "matching": "results/stats/all_seeds/finetuned/head_matching.parquet"}),
    Figure("row_gates", "attention.make_row_gates", "5. Attention patterns", "Gates",
           inputs={"rows": "results/stats/all_seeds/finetuned/row_gates.parquet"}),
    Figure("k90_violins", "attention.make_k90_violins", "5. Attention patterns", "K90",
           inputs={"k90": "results/stats/seed{example_seed}/finetuned/k90.parquet"},
           params={"seed": "figures.example_seed"}),
    Figure("attention_gallery", "attention.make_attention_gallery", "5. Attention patterns", "Gates",
           inputs={"gates": "results/stats/seed{example_seed}/finetuned/gates.parquet",
                   "class_attention": "results/activations/seed{example_seed}/finetuned/class_attention.parquet",
                   "token_map": "results/tokens/token_map.parquet"},
           params={"classes": "classes", "seed": "figures.example_seed", "gallery_class": "figures.gallery_class"}),
    Figure("attention_entropy", "attention.make_attention_entropy", "5. Attention patterns", "Entropy",
           inputs={"patterns": "results/stats/all_seeds/finetuned/attention_patterns.parquet"},
           params={"ci": "stats.ci"}),
    Figure("domain_attention", "attention.make_domain_attention", "5. Attention patterns", "Spike domains",
           inputs={"domains": "results/stats/seed{seed}/finetuned/domain_attention.parquet",
                   "variants": "config:data.variants",
                   "matching": "results/stats/all_seeds/finetuned/head_matching.parquet"},
           params={"seeds": "train.seeds"}),
    # ---- 6. Directionality
    Figure("directionality_index", "directionality.make_directionality_index", "6. Directionality", "Index",
           inputs={"directionality": "results/stats/all_seeds/finetuned/directionality.parquet"}),
    Figure("directionality_spectrum", "directionality.make_directionality_spectrum", "6. Directionality",
           "Spectrum",
           inputs={"directionality": "results/stats/all_seeds/finetuned/directionality.parquet"},
           params={"ci": "stats.ci"}),
    Figure("directionality_original", "directionality.make_directionality_original", "6. Directionality",
           "Original code",
           inputs={"directionality": "results/stats/all_seeds/finetuned/directionality.parquet"}),
    Figure("open_set", "openset.make_open_set", "7. Open set", "Unassigned",
           inputs={"summaries": "results/open_set/seed{seed}/summary.tsv"},
           params={"seeds": "train.seeds"}),
    Figure("reliability", "openset.make_reliability", "7. Open set", "Calibration",
           inputs={"calibrations": "results/open_set/seed{seed}/calibration.json"},
           params={"seeds": "train.seeds"}),
    # ---- 8. Checkpoints (init, mlm, finetuned of every seed)
    Figure("mlm_curves", "checkpoints.make_mlm_curves", "8. Checkpoints", "Pre-training",
           inputs={"logs": "results/pretrained/seed{seed}/pretrain_log.csv"},
           params={"seeds": "train.seeds"}, init="mlm"),
    Figure("gate_grid_checkpoints", "checkpoints.make_gate_grid_checkpoints", "8. Checkpoints", "Gates",
           inputs={"agreement": "results/stats/all_seeds/{checkpoint}/gate_agreement.parquet"},
           params={"checkpoints": "activations.checkpoints"}),
    Figure("cone_checkpoints", "checkpoints.make_cone_checkpoints", "8. Checkpoints", "Cone index",
           inputs={"cone": "results/stats/all_seeds/{checkpoint}/cone_index.parquet"},
           params={"checkpoints": "activations.checkpoints", "ci": "stats.ci"}),
    Figure("attention_checkpoints", "checkpoints.make_attention_checkpoints", "8. Checkpoints", "Entropy and K90",
           inputs={"patterns": "results/stats/all_seeds/{checkpoint}/attention_patterns.parquet"},
           params={"checkpoints": "activations.checkpoints"}),
    Figure("directionality_checkpoints", "checkpoints.make_directionality_checkpoints", "8. Checkpoints",
           "Directionality",
           inputs={"directionality": "results/stats/all_seeds/{checkpoint}/directionality.parquet"},
           params={"checkpoints": "activations.checkpoints"}),
]
REGISTRY = {figure.id: figure for figure in FIGURES}
FIGURE_IDS = list(REGISTRY)


def active_figures(init: str, checkpoints: list[str]) -> list[Figure]:
    """The figures of a run with config model.init `init` analysing `checkpoints` (module docstring)."""
    return [f for f in FIGURES if f.needs <= set(checkpoints) and f.init in (None, init)]


def rule_inputs(figure: Figure, seeds: list[int], example_seed: int, config_file: Callable[[str], str],
                checkpoints: list[str] = ("finetuned",)) -> dict[str, str | list[str]]:
    """The input of rule fig_<id>: every pattern filled in (module docstring); `config_file(key)`
    gives the path of the file a config key names; `checkpoints`: the analysed checkpoints."""
    inputs = {}
    for name, pattern in figure.inputs.items():
        if pattern.startswith(CONFIG_FILE):
            inputs[name] = config_file(pattern.removeprefix(CONFIG_FILE))
            continue
        fields = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
        if not fields <= set(FIELDS):
            raise ValueError(f"figure {figure.id}: input {name} {pattern!r} has {sorted(fields - set(FIELDS))}; "
                             f"expected only {{seed}}, {{checkpoint}} or {{example_seed}}")
        if fields & {"seed", "checkpoint"}:
            inputs[name] = [pattern.format(seed=seed, checkpoint=checkpoint, example_seed=example_seed)
                            for checkpoint in (checkpoints if "checkpoint" in fields else [None])
                            for seed in (seeds if "seed" in fields else [None])]
        else:
            inputs[name] = pattern.format(example_seed=example_seed)
    return inputs


def drawing_function(figure_id: str) -> Callable:
    """The function that draws `figure_id` (imported here: the drawing modules are heavy)."""
    if figure_id not in REGISTRY:
        raise ValueError(f"params.figure: unknown figure id {figure_id!r}; known: {sorted(REGISTRY)}")
    module, function = REGISTRY[figure_id].draw.split(".")
    return getattr(importlib.import_module(f"bertgeom.figures.{module}"), function)

