# Helpers shared by all rule files (config validation, config -> params, paths, seeds, input
# functions).
import os
import sys
from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../config/config.schema.yaml")

# Jobs import the library from this checkout, also inside conda environments (--sdm conda); so does
# this file (bertgeom.config).
SRC = str(Path(workflow.basedir) / "src")
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
)
sys.path.insert(0, SRC)
from bertgeom.checkpoints import (
    CLASSIFIED,
    HF_FILES,
    INIT_SETTINGS,
    MODEL_DIRS,
    PRETRAINED_FILES,
    analysed,
    available,
)
from bertgeom.config import Settings, check_config, resolve_path
from bertgeom.explorer_paths import cone_path, stage_paths
from bertgeom.figures.registry import active_figures, rule_inputs

# What the schema cannot express (constraints between keys, files the config names): before any job.
check_config(config, workflow.basedir)

# --- config -> params ----------------------------------------------------------------------------
# Every setting a job uses reaches it through `params:`, canonical (sorted keys, schema-typed numbers:
# re-ordering a config reruns nothing), so that editing a key reruns exactly the rules using it.
# Execution-only keys (x-execution-only in the schema) travel in SETTINGS.execution(block), which
# Snakemake does not compare: editing them reruns nothing. See bertgeom.config.
SETTINGS = Settings(config)
SEEDS = config["train"]["seeds"]
CLASSES = SETTINGS.get("classes")
# The checkpoints of every seed that are analysed (bertgeom.checkpoints; path level {checkpoint}).
CHECKPOINTS = analysed(config)
MLM = config["model"]["init"] == "mlm"  # the pretrain stage runs exactly then
# The figures of this run (registry entries whose checkpoints are analysed, and init if they name one).
FIGURES = active_figures(config["model"]["init"], CHECKPOINTS)
FIGURE_IDS = [figure.id for figure in FIGURES]


def data_params():
    """What the download uses of the data block: the source, and only that source's settings."""
    source = config["data"]["source"]
    if source == "fasta":  # the files themselves are inputs (download_inputs)
        return {"source": source, "strip_gaps": SETTINGS.get("data.strip_gaps")}
    return {
        "source": source,
        "seed": SETTINGS.get("data.seed"),
        source: SETTINGS.block(f"data.{source}"),
    }


def model_params():
    """What training and tokenization use of the model block: the init, and its source."""
    init = config["model"]["init"]
    source = "pretrained" if init == "pretrained" else "preset"
    return {"init": init, source: SETTINGS.get(f"model.{source}")}


def figure_params(figure):
    """Params of a figure's rule (fig_<id>), from its registry entry; its id, the settings
    every figure uses, and the config keys the entry names (figures.example_seed: the seed
    example_seed() gives; activations.checkpoints: the analysed checkpoints)."""
    special = {
        "figures.example_seed": example_seed(),
        "activations.checkpoints": CHECKPOINTS,
    }
    return {
        "figure": figure.id,
        "dpi": SETTINGS.get("figures.dpi"),
        "context": SETTINGS.get("figures.context"),
        "source": SETTINGS.get("data.source"),
        **{
            name: special[key] if key in special else SETTINGS.get(key)
            for name, key in figure.params.items()
        },
    }


def resolve(path):
    """A config path: as given if it exists from the working directory, else from the workflow's."""
    return str(resolve_path(path, workflow.basedir))


def final_outputs():
    """Everything `snakemake` (rule all) builds by default."""
    outputs = ["results/data/spike.parquet", "results/data/qc.tsv"]
    outputs += expand(
        "results/tokens/{name}.parquet",
        name=["train", "val", "test", "kmer_counts", "token_map"],
    )
    outputs += [
        f
        for seed in SEEDS
        for ckpt in CHECKPOINTS
        for f in activation_files(seed, ckpt).values()
    ]
    outputs += stats_outputs()
    outputs += attention_outputs()
    outputs += figure_files()
    outputs += train_outputs()
    outputs += checkpoint_outputs()
    outputs += open_set_outputs()
    outputs += ["results/explorer/index.html"]
    return outputs


# --- train and evaluate (rules/train.smk) ------------------------------------------------------
MODEL_FILES = {
    "model": "model.safetensors",
    "config": "config.json",
    "tokenizer": "tokenizer.json",
    "tokenizer_config": "tokenizer_config.json",
    "special_tokens_map": "special_tokens_map.json",
    "train_log": "train_log.csv",
    "training_info": "training_info.json",
}


def model_files(seed):
    """{name: path} of the model directory of one seed (docs/outputs.md); seed may be "{seed}"."""
    return {
        name: f"results/models/seed{seed}/{file}" for name, file in MODEL_FILES.items()
    }


# --- checkpoints: init_model, pretrain (rules/pretrain.smk) -------------------------------------------
def init_files(seed):
    """{name: path} of the `init` checkpoint of one seed; seed may be "{seed}"."""
    files = {name: f"results/init/seed{seed}/{file}" for name, file in HF_FILES.items()}
    return {**files, "info": f"results/init/seed{seed}/init_info.json"}


def pretrained_files(seed):
    """{name: path} of the pre-trained encoder of one seed (model.init mlm); seed may be "{seed}"."""
    return {
        name: f"results/pretrained/seed{seed}/{file}"
        for name, file in PRETRAINED_FILES.items()
    }


def checkpoint_outputs():
    """Every seed's `init` checkpoint and, with model.init mlm, its pre-trained encoder."""
    files = [f for seed in SEEDS for f in init_files(seed).values()]
    if MLM:
        files += [f for seed in SEEDS for f in pretrained_files(seed).values()]
    return files


def initial_weight_settings():
    """What init_model uses of the pretrain block (model.init mlm): the settings that shape
    the masked LM's initial weights (bertgeom.checkpoints.INIT_SETTINGS, those the schema has).
    """
    if not MLM:
        return {}
    return {
        key: SETTINGS.get(f"pretrain.{key}")
        for key in INIT_SETTINGS
        if key in config["pretrain"]
    }


def encoder_input(wildcards):
    """Input of train: with model.init mlm the seed's pre-trained encoder, else nothing."""
    return pretrained_files(wildcards.seed)["model"] if MLM else []


def checkpoint_model(wildcards):
    """The weights and config.json of a checkpoint of a seed (bertgeom.checkpoints.MODEL_DIRS)."""
    directory = MODEL_DIRS[wildcards.checkpoint].format(seed=wildcards.seed)
    return {
        "model": f"{directory}/model.safetensors",
        "model_config": f"{directory}/config.json",
    }


def pretrained_model_input(wildcards):
    """model.init pretrained with a local model.pretrained directory: its config.json (an input, so
    a new checkpoint retrains); otherwise nothing (scratch, or a hub id)."""
    if config["model"]["init"] != "pretrained":
        return []
    path = Path(resolve(config["model"]["pretrained"])) / "config.json"
    return str(path) if path.exists() else []


def train_outputs():
    """Every seed's model directory and evaluation files."""
    models = [f for seed in SEEDS for f in model_files(seed).values()]
    return models + expand(
        "results/eval/seed{seed}/{name}",
        seed=SEEDS,
        name=["predictions.parquet", "metrics.json"],
    )


# --- open set (rules/openset.smk) -----------------------------------------------------------------
OPEN_SET_FILES = {"open_set": "open_set.json", "tensors": "open_set.safetensors"}
OPEN_SET_FIT_SETS = ["threshold", "fresh", "calibration"]


def synthetic_variety():
    """config data.synthetic without per_class: how the background and open-set genomes vary (their
    numbers come from data.background and open_set)."""
    return SETTINGS.block("data.synthetic", exclude=("per_class",))


def extractor_qc():
    """The qc settings the spike extractor uses (drop_duplicates is a data-set rule, not a check)."""
    return SETTINGS.block("qc", exclude=("drop_duplicates",))


def background_input(wildcards):
    """Input of train: the background genomes when train.outlier_weight > 0, else nothing."""
    if config["train"]["outlier_weight"] > 0:
        return "results/tokens/background.parquet"
    return []


def open_set_outputs():
    """Per seed the open-set files and the model card in the model directory, the evaluation tables."""
    per_seed = [
        f"results/models/seed{{seed}}/{name}" for name in OPEN_SET_FILES.values()
    ]
    per_seed += ["results/models/seed{seed}/README.md"]
    per_seed += expand(
        "results/open_set/seed{{seed}}/{name}",
        name=["scores.parquet", "summary.tsv", "calibration.json"],
    )
    return [f for pattern in per_seed for f in seed_files(pattern)]


# --- data (rules/data.smk) ----------------------------------------------------------------------
def data_fasta_files():
    """data.source fasta: {class: resolved path} of config data.fasta; otherwise {}."""
    if config["data"]["source"] != "fasta":
        return {}
    return {name: resolve(path) for name, path in config["data"]["fasta"].items()}


def download_inputs(wildcards):
    """Inputs of the download rule: the reference, variants.yaml and, for data.source fasta, the
    per-class FASTA files (inputs, so that a changed file reruns the download)."""
    return {
        "reference": resolve(config["data"]["reference"]),
        "variants": resolve(config["data"]["variants"]),
        "fasta": list(data_fasta_files().values()),
    }


# --- tokens (rules/tokens.smk) ------------------------------------------------------------------
def pretrained_source():
    """model.init pretrained: model.pretrained as a local directory (resolved) when it is one, else
    as given (a hub id); otherwise None."""
    if config["model"]["init"] != "pretrained":
        return None
    path = resolve(config["model"]["pretrained"])
    return path if Path(path).exists() else SETTINGS.get("model.pretrained")


def tokens_base_vocab(wildcards):
    """model.init pretrained with a local model.pretrained directory: that directory (an input,
    so a new base vocabulary reruns the tokenization); otherwise nothing (scratch, or a hub id).
    """
    if config["model"]["init"] != "pretrained":
        return []
    path = resolve(config["model"]["pretrained"])
    return path if Path(path).exists() else []


# --- figures (rules/figures.smk) -------------------------------------------------------------
def seed_files(pattern):
    """`pattern` with {seed} filled in for every seed of train.seeds, in that order (other
    wildcards, such as {checkpoint}, kept)."""
    return expand(pattern, seed=SEEDS, allow_missing=True)


def example_seed():
    """The seed whose model the single-model figures show (figures.example_seed, else the first seed;
    check_config has made sure it is one of train.seeds)."""
    seed = config["figures"]["example_seed"]
    return SEEDS[0] if seed is None else seed


def figure_code(module):
    """The library files that draw a figure: inputs, so that editing a figure module reruns its
    figure rules (and nothing upstream); editing the theme reruns every figure."""
    base = Path(workflow.basedir) / "src" / "bertgeom" / "figures"
    return [str(base / "theme.py"), str(base / f"{module}.py")]


def figure_inputs(figure):
    """Input of a figure's rule (fig_<id>), from its registry entry; the entry's patterns filled
    in, and the drawing code (figure_code)."""
    inputs = rule_inputs(
        figure,
        seeds=SEEDS,
        example_seed=example_seed(),
        config_file=lambda key: resolve(SETTINGS.get(key)),
        checkpoints=CHECKPOINTS,
    )
    return {**inputs, "code": figure_code(figure.module)}


def figure_files():
    """Every figure (PNG and PDF) and the report's metrics table."""
    figures = expand("results/figures/{id}.{ext}", id=FIGURE_IDS, ext=["png", "pdf"])
    return figures + [
        "results/figures/metrics_table.html",
        "results/figures/metrics_table.tsv",
        "results/figures/open_set_table.html",
        "results/figures/open_set_table.tsv",
    ]


# --- activations (rules/activations.smk) -------------------------------------------------------
ACTIVATION_FILES = [
    "summary",
    "heads",
    "attention_summary",
    "tokens",
    "attention",
    "class_attention",
]


def activation_files(seed, ckpt):
    """{name: path} of the activation dump of one checkpoint of one seed (docs/outputs.md); seed and
    checkpoint may be "{seed}", "{checkpoint}"."""
    return {
        name: f"results/activations/seed{seed}/{ckpt}/{name}.parquet"
        for name in ACTIVATION_FILES
    }


def activation_token_files():
    """The tokens files of config activations.splits, in that order."""
    return expand(
        "results/tokens/{split}.parquet", split=config["activations"]["splits"]
    )


# --- stats (rules/stats.smk) ----------------------------------------------------------------------
# Per-seed tidy tables results/stats/seed{seed}/{checkpoint}/{name}.parquet that rule aggregate_seeds
# turns into results/stats/all_seeds/{checkpoint}/{name}.parquet (mean and CI across seeds). Other stats stages append
# their table names here (in this file, so that the list is complete before the rules are read).
STATS_TABLES = [
    "cone_index",
    "distribution",
    "attention_patterns",
    "row_gates",
    "domain_attention",
    "directionality",
]


# Tables without per-head rows: aggregated as they are (the others over matched heads).
HEADLESS_TABLES = ["distribution"]


def stats_seed_tables(wildcards):
    """Input of aggregate_seeds: results/stats/seed{seed}/{checkpoint}/{name}.parquet for every
    seed, and the head matching across seeds (of that checkpoint) for tables with per-head rows.
    """
    tables = expand(
        "results/stats/seed{seed}/{checkpoint}/{name}.parquet",
        seed=SEEDS,
        **{"checkpoint": wildcards.checkpoint},
        name=wildcards.name,
    )
    matching = (
        []
        if wildcards.name in HEADLESS_TABLES
        else [HEAD_MATCHING.format(**{"checkpoint": wildcards.checkpoint})]
    )
    return {"tables": tables, "matching": matching}


def stats_outputs():
    """Every per-seed and across-seed stats table, and the 2-D embeddings of every seed, of every
    analysed checkpoint."""
    tables = expand(
        "results/stats/seed{seed}/{checkpoint}/{name}.parquet",
        seed=SEEDS,
        **{"checkpoint": CHECKPOINTS},
        name=STATS_TABLES + ["embedding_2d"],
    )
    return tables + expand(
        "results/stats/all_seeds/{checkpoint}/{name}.parquet",
        **{"checkpoint": CHECKPOINTS},
        name=STATS_TABLES,
    )


# --- attention patterns and directionality (rules/attention.smk) ---------------------------------
HEAD_MATCHING = "results/stats/all_seeds/{checkpoint}/head_matching.parquet"
GATE_COUNTS = "results/stats/all_seeds/gate_counts.tsv"
# What rule null_model uses of the patterns block (not the per-matrix metrics' singular_values,
# rank_tol, the domains' fdr or the weights' eig_tol).
NULL_MODEL_PATTERNS = SETTINGS.block(
    "patterns", exclude=("eig_tol", "fdr", "singular_values", "rank_tol")
)


def attention_outputs():
    """The attention tables not aggregated by aggregate_seeds (labels, tests, K90 samples,
    agreement, head matching) of every analysed checkpoint, the gate counts of all of them and
    the null model's tables."""
    per_seed = expand(
        "results/stats/seed{seed}/{checkpoint}/{name}.parquet",
        seed=SEEDS,
        **{"checkpoint": CHECKPOINTS},
        name=["gates", "gate_tests", "k90"],
    )
    null_model = expand(
        "results/stats/null_model/{name}.parquet", name=["scores", "gates"]
    )
    across = expand(
        "results/stats/all_seeds/{checkpoint}/{name}.parquet",
        **{"checkpoint": CHECKPOINTS},
        name=["gate_agreement", "head_matching"],
    )
    return per_seed + null_model + across + [GATE_COUNTS]


# --- explorer (rules/explorer.smk) ------------------------------------------------------------------
def explorer_inputs(wildcards):
    """The tables of every seed and analysed checkpoint (bertgeom.explorer_paths.stage_paths),
    the token map and split tables (positions -> amino acids, lineages), variants.yaml (domains,
    mutations) and the explorer's code (editing it reruns the explorer only)."""
    tables = [
        str(path)
        for checkpoint in CHECKPOINTS
        for seed in SEEDS
        for path in stage_paths("results", seed, checkpoint).values()
    ]
    cones = [str(cone_path("results", c)) for c in CHECKPOINTS]
    return {
        "tables": tables + cones,
        "token_map": "results/tokens/token_map.parquet",
        "splits": expand(
            "results/tokens/{split}.parquet", split=["train", "val", "test"]
        ),
        "variants": resolve(config["data"]["variants"]),
        "code": [
            str(Path(workflow.basedir) / "src" / "bertgeom" / name)
            for name in (
                "explorer.py",
                "explorer_paths.py",
                "explorer_run.py",
                "explorer_page.py",
                "explorer.js",
            )
        ],
    }


def explorer_params():
    """What the explorer shows: seeds, the init's checkpoints (those not analysed: an empty state),
    the example seed (full-resolution matrices) and how many top keys it lists."""
    return {
        "seeds": SEEDS,
        "checkpoints": available(config["model"]["init"]),
        "example_seed": example_seed(),
        "top_k": SETTINGS.get("patterns.top_keys"),
    }


# --- cluster execution (profiles/slurm) ----------------------------------------------------------
# Rules run by the submitting machine itself under a cluster executor: seconds of work each, where a
# queued job would wait longer than it runs, and the download (compute nodes often have no network).
# The same as `localrules:`, which takes names only; rule `all` is always local.
LOCAL_RULES = [
    "download",
    "aggregate_seeds",
    "match_heads",
    "gate_agreement",
    "gate_counts",
    "metrics_table",
    "open_set_table",
    "model_card",
    "explorer",
    *(f"fig_{figure_id}" for figure_id in FIGURE_IDS),
]
workflow.localrules(*LOCAL_RULES)
