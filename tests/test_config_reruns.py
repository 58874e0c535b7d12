"""A config edit reruns exactly what it changes (rules/common.smk, "config -> params").

The table below is written by hand, not derived from the rules: for every key of the schema, a valid
new value and the rules whose jobs must rerun when only that key changes (their dependents rerun
with them). Each key is edited in a copy of one finished tiny run and `snakemake -n` must plan
exactly the jobs that `snakemake -n --forcerun <those rules>` plans. A new schema key fails the
first test until it is added here.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from workflow import TINY, snakemake

from bertgeom.config import leaf_keys, load_schema

FIGURES = [
    "fig_data_qc", "fig_kmer_occurrences", "fig_training_curves", "fig_confusion_matrix", "fig_per_class_f1",
    "fig_cone_stream", "fig_cone_heads", "fig_pca_pareto", "fig_embedding_pca", "fig_embedding_tsne",
    "fig_probe_silhouette", "fig_gate_grid", "fig_row_gates", "fig_k90_violins", "fig_attention_gallery", "fig_attention_entropy",
    "fig_domain_attention", "fig_directionality_index", "fig_directionality_spectrum", "fig_directionality_original",
    "fig_open_set", "fig_reliability", "fig_mlm_curves", "fig_gate_grid_checkpoints", "fig_cone_checkpoints",
    "fig_attention_checkpoints", "fig_directionality_checkpoints",
]  # fmt: skip
EXAMPLE_SEED_FIGURES = ["fig_embedding_pca", "fig_embedding_tsne", "fig_k90_violins", "fig_attention_gallery"]
CI_USERS = [
    "aggregate_seeds", "metrics_table", "fig_per_class_f1", "fig_cone_stream", "fig_probe_silhouette",
    "fig_attention_entropy", "fig_directionality_spectrum", "fig_cone_checkpoints",
]  # fmt: skip
NOTHING: list[str] = []
PATTERNS = ["null_model", "attention_patterns"]  # the gate settings: the null model's labels use them too
TOKENS = ["split_and_tokenize"]
DOWNLOAD = ["download"]
# Synthetic genomes outside the data set: background (outlier exposure) and the open-set genome sets.
OUTSIDE = ["background", "open_set_fit_genomes", "open_set_eval_genomes"]
VARIETY = DOWNLOAD + OUTSIDE  # data.synthetic keys but per_class: the variety of every synthetic genome
EXTRACTOR = ["extract_spike", "train"] + OUTSIDE  # qc keys the spike extractor uses (train records them)

# Figures over every analysed checkpoint, the gate counts and the explorer: what activations.checkpoints changes.
CHECKPOINT_LISTS = ["gate_counts", "fig_gate_grid_checkpoints", "fig_cone_checkpoints", "fig_attention_checkpoints",
                    "fig_directionality_checkpoints", "explorer"]  # fmt: skip
PRETRAIN = ["pretrain"]

# key: (new value, rules that must rerun). Values are for config/tiny.yaml (synthetic data, init mlm).
EXPECTED = {
    "classes": (["GH", "Lambda", "Mu", "Alpha", "Beta", "Delta", "Gamma"], VARIETY),
    "data.source": ("ncbi", DOWNLOAD),
    "data.seed": (5, VARIETY),
    "data.reference": ("reference_copy.fasta", ["download", "extract_spike"] + OUTSIDE),
    "data.variants": ("variants_copy.yaml", ["download", "split_and_tokenize", "attention_patterns",
                                             "fig_domain_attention"] + OUTSIDE),  # fmt: skip
    "data.synthetic.per_class": (13, DOWNLOAD),  # the other sets have their own sizes
    "data.synthetic.substitution_rate": (0.001, VARIETY),
    "data.synthetic.n_runs_mean": (1.0, VARIETY),
    "data.synthetic.n_run_length": ([20, 200], VARIETY),
    "data.synthetic.trim_5p_max": (100, VARIETY),
    "data.synthetic.trim_3p_max": (100, VARIETY),
    "data.synthetic.mixture": (False, VARIETY),
    "data.synthetic.spectrum": ("uniform", VARIETY),
    "data.synthetic.drop_max": (0.2, VARIETY),
    "data.synthetic.homoplasy_mean": (2.0, VARIETY),
    "data.synthetic.ambiguity_mean": (2.0, VARIETY),
    "data.strip_gaps": (True, NOTHING),  # used by the fasta source only
    "data.background.n": (50, ["background"]),
    "data.background.keep_max": (0.2, ["background"]),
    # The NCBI and FASTA settings are not used by the synthetic source.
    "data.ncbi.base_url": ("https://example.org/datasets/v2", NOTHING),
    "data.ncbi.max_per_class": (100, NOTHING),
    "data.ncbi.batch_size": (50, NOTHING),
    "data.ncbi.page_size": (500, NOTHING),
    "data.ncbi.complete_only": (False, NOTHING),
    "data.ncbi.host_taxon": ("9605", NOTHING),
    "data.ncbi.timeout_s": (60, NOTHING),
    "data.ncbi.max_retries": (3, NOTHING),
    "data.ncbi.max_pages": (5, NOTHING),
    "data.fasta": ({"GH": "gh.fasta"}, NOTHING),
    # train records the QC settings for `bertgeom predict`.
    "qc.max_n_fraction": (0.1, EXTRACTOR),
    "qc.drop_duplicates": (True, ["extract_spike", "train"]),  # a rule of the data set, not of the extractor
    "qc.max_length_change": (60, EXTRACTOR),
    "qc.preset": ("asm10", EXTRACTOR),
    "qc.flank": (500, EXTRACTOR),
    "qc.allow_internal_stops": (True, EXTRACTOR),
    "tokens.k": (15, TOKENS),
    "tokens.stride": (12, TOKENS),
    "tokens.max_length": (480, TOKENS),
    "tokens.min_count": (2, TOKENS),
    "tokens.test_fraction": (0.25, TOKENS),
    "tokens.val_fraction": (0.2, TOKENS),
    "tokens.split_seed": (7, TOKENS),
    # mlm -> scratch: no pretrain, no mlm checkpoint (whose jobs --forcerun would plan): its own test below
    "model.init": ("scratch", None),
    "model.preset": ("small", ["init_model", "pretrain", "train"]),
    "model.pretrained": ("bert-base-uncased", NOTHING),  # init is mlm
    "pretrain.steps": (10, PRETRAIN),
    "pretrain.batch_size": (3, PRETRAIN),
    "pretrain.window": (24, PRETRAIN),
    "pretrain.mask_rate": (0.2, PRETRAIN),
    "pretrain.span": (2, PRETRAIN),
    "pretrain.mask_token": (0.7, PRETRAIN),
    "pretrain.random_token": (0.2, PRETRAIN),
    "pretrain.lr": (0.002, PRETRAIN),
    "pretrain.warmup_ratio": (0.1, PRETRAIN),
    "pretrain.decay_ratio": (0.3, PRETRAIN),
    "pretrain.weight_decay": (0.0, PRETRAIN),
    "pretrain.eps": (1.0e-7, PRETRAIN),
    "pretrain.grad_clip": (0.5, PRETRAIN),
    "pretrain.bf16": (False, PRETRAIN),
    "pretrain.deterministic": (False, PRETRAIN),
    "pretrain.device": ("cpu", NOTHING),
    "pretrain.checkpoint_every": (5, NOTHING),
    "pretrain.log_every": (2, NOTHING),
    "pretrain.position_init": ("random", ["init_model", "pretrain"]),
    "train.seeds": ([0, 1, 2], None),  # the new seed's jobs only: test_a_new_seed_runs_only_its_own_jobs
    "train.epochs": (2, ["train"]),
    "train.batch_size": (4, ["train"]),
    "train.lr": (0.002, ["train"]),
    "train.eps": (1.0e-7, ["train"]),
    "train.weight_decay": (0.0, ["train"]),
    "train.warmup_ratio": (0.2, ["train"]),
    "train.grad_clip": (0.5, ["train"]),
    "train.bf16": (False, ["train"]),
    "train.compile": (True, NOTHING),
    "train.device": ("cpu", NOTHING),
    "train.deterministic": (False, ["train"]),
    "train.eval_batch_size": (16, NOTHING),
    "train.log_every": (5, NOTHING),
    "train.outlier_weight": (0.25, ["train"]),
    "open_set.per_lineage": (5, ["open_set_fit_genomes", "open_set_eval_genomes"]),
    "open_set.fresh_per_class": (5, ["open_set_fit_genomes"]),
    "open_set.controls": (5, ["open_set_eval_genomes"]),
    "open_set.max_false_unassigned": (0.05, ["open_set_fit"]),
    **{f"open_set.calibration.{key}": (value, ["open_set_fit_genomes"]) for key, value in (
        ("per_class", 6), ("substitution_rate", 0.003), ("n_runs_mean", 1.0), ("drop_max", 0.7),
        ("homoplasy_mean", 8.0), ("ambiguity_mean", 5.0))},
    "activations.splits": (["test", "val"], ["dump_activations", "null_model"]),
    "activations.checkpoints": (["init", "finetuned"], CHECKPOINT_LISTS),
    "activations.batch_size": (4, NOTHING),
    "activations.subset_per_class": (2, ["dump_activations", "null_model"]),
    "activations.token_stages": (["input", "q", "k", "v", "context", "attn_output", "attn_ln", "output"],
                                 ["dump_activations"]),  # fmt: skip
    "activations.device": ("cpu", NOTHING),
    "activations.row_group_mb": (16, NOTHING),
    "stats.ci": (0.9, CI_USERS),
    "stats.pca_components": (5, ["distribution"]),
    "stats.tsne_perplexity": (4, ["distribution"]),
    "stats.tsne_max_points": (100, ["distribution"]),
    "stats.probe_folds": (3, ["distribution"]),
    "stats.outlier_sigma": (2.5, ["cone_index", "distribution"]),
    "stats.distribution_stages": (["input", "output"], ["distribution"]),
    "stats.batch_rows": (1000, NOTHING),
    "patterns.window": (3, PATTERNS),
    "patterns.top_keys": (3, ["dump_activations", *PATTERNS]),  # col_top{k} of every sequence
    "patterns.min_block": (6, PATTERNS),
    "patterns.singular_values": (3, ["attention_patterns"]),
    "patterns.rank_tol": (0.01, ["attention_patterns"]),
    "patterns.eig_tol": (1.0e-5, ["directionality"]),
    "patterns.fdr": (0.1, ["attention_patterns"]),
    **{f"patterns.thresholds.{gate}": (0.6, PATTERNS) for gate in (
        "directional", "open", "backward_contextual", "forward_contextual", "cluster", "instance", "closed")},
    **{f"patterns.min_effect.{gate}": (3.0, PATTERNS) for gate in (
        "directional", "backward_contextual", "forward_contextual", "cluster", "instance", "closed")},
    "patterns.nulls.seed": (1001, PATTERNS),
    "patterns.nulls.level": (0.95, PATTERNS),
    "patterns.nulls.row_draws": (50, PATTERNS),
    "patterns.nulls.permutations": (10, PATTERNS),
    "figures.dpi": (100, FIGURES),
    "figures.context": ("talk", FIGURES),
    "figures.example_seed": (1, [*EXAMPLE_SEED_FIGURES, "explorer"]),  # the explorer's full-resolution seed
    "figures.gallery_class": ("Alpha", ["fig_attention_gallery"]),
}  # fmt: skip


def edited_config(workdir: Path, edits: dict) -> Path:
    """config/tiny.yaml with `edits` ({dotted key: value}) applied, written into workdir."""
    config = yaml.safe_load(TINY.read_text())
    for key, value in edits.items():
        *parents, last = key.split(".")
        block = config
        for part in parents:
            block = block.setdefault(part, {})
        block[last] = value
    path = workdir / f"edited-{abs(hash(tuple(edits)))}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def planned(workdir: Path, configfile: Path = TINY, *args: str) -> Counter:
    """Jobs per rule that `snakemake -n` plans (rule `all` left out)."""
    result = snakemake(workdir, "-n", "--quiet", "rules", *args, configfile=configfile)
    counts = Counter()
    for line in result.stdout.splitlines():
        if line.strip().startswith("total"):
            break
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match[1] not in ("all", "job"):
            counts[match[1]] = int(match[2])
    return counts


@pytest.fixture(scope="module")
def finished(tiny_run, tmp_path_factory) -> Path:
    """A copy of the finished tiny run, with the files the path edits point to."""
    copy = tmp_path_factory.mktemp("reruns") / "run"
    shutil.copytree(tiny_run, copy, symlinks=True)
    root = TINY.parents[1]
    shutil.copy(root / "resources" / "NC_045512.2.fasta", copy / "reference_copy.fasta")
    shutil.copy(root / "resources" / "variants.yaml", copy / "variants_copy.yaml")
    return copy


@pytest.fixture(scope="module")
def forced(finished):
    """Jobs planned by --forcerun of a set of rules (cached: many keys share a set)."""
    cache: dict[tuple, Counter] = {}

    def plan(rules: list[str]) -> Counter:
        key = tuple(sorted(rules))
        if key not in cache:
            cache[key] = planned(finished, TINY, "--forcerun", *key) if key else Counter()
        return cache[key]

    return plan


def test_the_table_lists_every_schema_key():
    keys = leaf_keys(load_schema())
    assert sorted(EXPECTED) == sorted(keys), {
        "missing from EXPECTED": sorted(set(keys) - set(EXPECTED)),
        "not in the schema": sorted(set(EXPECTED) - set(keys)),
    }


@pytest.mark.slow
@pytest.mark.parametrize("key", [k for k, (_, rules) in EXPECTED.items() if rules is not None])
def test_editing_a_key_reruns_exactly_its_rules(key, finished, forced):
    value, rules = EXPECTED[key]
    plan = planned(finished, edited_config(finished, {key: value}))
    assert plan == forced(rules), f"{key} -> {value!r}: planned {dict(plan)}, expected --forcerun {rules}"


@pytest.mark.slow
def test_a_new_seed_runs_only_its_own_jobs(finished):
    result = snakemake(finished, "-n", configfile=edited_config(finished, {"train.seeds": [0, 1, 2]}))
    seeds = Counter(re.findall(r"^\s+wildcards: .*seed=(\d+)", result.stdout, flags=re.M))
    assert set(seeds) == {"2"}, seeds  # no job of seeds 0 and 1 reruns
    assert planned(finished, edited_config(finished, {"train.seeds": [0, 1, 2]}))["train"] == 1


@pytest.mark.slow
def test_reordering_and_reformatting_the_config_reruns_nothing(finished):
    """Keys in reverse order in every block, integral floats written as ints and ints as floats."""

    def reverse(block):
        return {k: reverse(v) for k, v in reversed(block.items())} if isinstance(block, dict) else block

    config = reverse(yaml.safe_load(TINY.read_text()))
    config["train"]["grad_clip"] = 1  # a number key: 1 and 1.0 are the same setting
    config["stats"]["ci"] = 0.950
    config["activations"]["batch_size"] = 8.0  # an integer key given as a float
    path = finished / "reordered.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert planned(finished, path) == Counter()


@pytest.mark.slow
def test_init_mlm_to_scratch_reruns_the_models_not_the_tokens(finished):
    """The tokens stay (only init pretrained extends the vocabulary); both seeds' initial weights and
    models are redone; no pre-training, and no job of the mlm checkpoint, is planned."""
    config = edited_config(finished, {"model.init": "scratch"})
    plan = planned(finished, config)
    assert plan["init_model"] == plan["train"] == 2 and plan["dump_activations"] == 4
    assert not {"download", "split_and_tokenize", "pretrain"} & set(plan)
    result = snakemake(finished, "-n", configfile=config)
    assert "checkpoint=mlm" not in result.stdout
