"""Three checkpoints per seed (issue 15): init, mlm, finetuned. Parse-time config errors, the init
checkpoint's weights, the gate counts, the registry's {checkpoint} inputs, and the wiring on the
finished tiny run (config/tiny.yaml: model.init mlm, so every seed has all three)."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from test_train import fit_config, make_config, make_tokens
from workflow import TINY, snakemake

from bertgeom.checkpoints import CHECKPOINTS, analysed, available
from bertgeom.config import check_config, load_config, load_schema
from bertgeom.figures import checkpoints as checkpoint_figures
from bertgeom.figures import registry
from bertgeom.initial import write_initial_model
from bertgeom.model import build_model
from bertgeom.pretrain import DEFAULTS, state_digest
from bertgeom.stats.attention import LABELS
from bertgeom.stats.gate_counts import gate_counts
from bertgeom.tokens import KmerTokenizer

SEEDS = (0, 1)  # config/tiny.yaml
ACTIVATION_FILES = ("summary", "heads", "attention_summary", "tokens", "attention", "class_attention")
STATS_FILES = ("cone_index", "distribution", "embedding_2d", "attention_patterns", "gates", "gate_tests",
               "row_gates", "k90", "domain_attention", "directionality")  # fmt: skip
ACROSS_SEEDS = ("cone_index", "distribution", "attention_patterns", "row_gates", "domain_attention",
                "directionality", "head_matching", "gate_agreement")  # fmt: skip


# ---- config ---------------------------------------------------------------------------------------


def config_error(**blocks) -> str:
    """check_config's message for config/tiny.yaml with whole blocks replaced ('' when valid)."""
    config = yaml.safe_load(TINY.read_text())
    for block, values in blocks.items():
        config[block] = {**config.get(block, {}), **values}
    try:
        check_config(load_config(None, **config))
    except ValueError as err:
        return str(err)
    return ""


@pytest.mark.parametrize(
    "blocks, message",
    [
        (dict(pretrain={"steps": 0}), "config pretrain.steps 0 switches pre-training off, but model.init mlm"),
        (dict(model={"init": "scratch"}, activations={"checkpoints": ["init", "mlm"]}),
         r"config activations.checkpoints \['init', 'mlm'\]: \['mlm'\] do\(es\) not exist with model.init scratch"),
        (dict(pretrain={"mask_rate": 1.5}), r"config pretrain.mask_rate: expected a share in \(0, 1\), got 1.5"),
        (dict(pretrain={"mask_rate": 0.0}), r"config pretrain.mask_rate: expected a share in \(0, 1\), got 0"),
        (dict(pretrain={"window": 8, "span": 7}), "config pretrain.span: 7 is longer than the 6 k-mers of a window"),
        (dict(pretrain={"window": 600}), r"config pretrain.window: expected 3..512 \(tokens.max_length\) tokens"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_line_errors_naming_the_key(blocks, message):
    error = config_error(**blocks)
    assert re.fullmatch(message + ".*", error), error
    assert "\n" not in error


def test_valid_settings_pass_and_pretraining_off_is_fine_without_mlm():
    assert config_error() == ""
    assert config_error(model={"init": "scratch"}, pretrain={"steps": 0}) == ""
    assert config_error(activations={"checkpoints": ["finetuned", "mlm"]}) == ""


def test_parse_time_error_stops_the_workflow_before_any_job(tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["pretrain"]["span"] = 40
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", configfile=path, check=False)
    assert result.returncode != 0
    assert "config pretrain.span: 40 is longer than the 30 k-mers of a window" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_schema_pretrain_block_is_the_library_defaults():
    block = load_schema()["properties"]["pretrain"]["properties"]
    assert {key: node["default"] for key, node in block.items()} == DEFAULTS


def test_checkpoints_of_each_init():
    assert available("mlm") == list(CHECKPOINTS) == ["init", "mlm", "finetuned"]
    assert available("scratch") == available("pretrained") == ["init", "finetuned"]
    mlm = load_config(None, model={"init": "mlm"})
    assert analysed(mlm) == ["init", "mlm", "finetuned"]
    assert analysed({**mlm, "activations": {"checkpoints": ["finetuned", "init"]}}) == ["init", "finetuned"]


# ---- the init checkpoint: exactly where training starts --------------------------------------------


def test_scratch_init_checkpoint_is_the_model_training_starts_from(tmp_path):
    make_tokens(tmp_path / "tokens")
    config = make_config(epochs=1)
    config["model"]["init"] = "scratch"
    info = write_initial_model(tmp_path / "tokens", tmp_path / "init", tmp_path / "init" / "init_info.json",
                               config["classes"], config["model"], seed=3)  # fmt: skip
    trained = fit_config(config, 3, tmp_path / "tokens", tmp_path / "model", tmp_path / "ckpt")
    from transformers import BertForSequenceClassification

    saved = BertForSequenceClassification.from_pretrained(tmp_path / "init")
    assert state_digest(saved) == info["init_digest"] == trained["init_digest"]
    assert json.loads((tmp_path / "init" / "init_info.json").read_text())["init_digest"] == info["init_digest"]
    other = write_initial_model(tmp_path / "tokens", tmp_path / "init4", tmp_path / "init4.json",
                                config["classes"], config["model"], seed=4)  # fmt: skip
    assert other["init_digest"] != info["init_digest"]


# ---- gate counts ----------------------------------------------------------------------------------


def test_gate_counts_count_every_label_per_checkpoint_and_seed(tmp_path):
    paths = []
    for i, labels in enumerate([["open", "open", "none", "directional"], ["multiple", "closed", "open", "open"]]):
        paths.append(tmp_path / f"gates{i}.parquet")
        pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "gate": labels}).to_parquet(paths[-1])
    table = gate_counts(paths, ["init", "finetuned"], [0, 0])
    assert len(table) == 2 * len(LABELS) and (table["n_heads"] == 4).all()
    counts = table.set_index(["checkpoint", "label"])["heads"]
    assert counts[("init", "open")] == 2 and counts[("init", "directional")] == 1 and counts[("init", "closed")] == 0
    assert counts[("finetuned", "multiple")] == 1 and table.groupby("checkpoint")["heads"].sum().eq(4).all()
    pd.DataFrame({"layer": [0], "head": [0], "gate": ["sink"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad.parquet: unknown gate label\(s\) \['sink'\]"):
        gate_counts([tmp_path / "bad.parquet"], ["init"], [0])


# ---- registry: {checkpoint} inputs, figures per init and checkpoints ---------------------------------


def test_checkpoint_placeholder_lists_every_analysed_checkpoint():
    figure = registry.REGISTRY["cone_checkpoints"]
    inputs = registry.rule_inputs(figure, [3, 7], 7, {}.get, checkpoints=["init", "finetuned"])
    assert inputs == {"cone": ["results/stats/all_seeds/init/cone_index.parquet",
                               "results/stats/all_seeds/finetuned/cone_index.parquet"]}  # fmt: skip
    both = registry.Figure("both", "data.make_data_qc", "1. Data", "x", inputs={"t": "s{seed}/{checkpoint}.tsv"})
    assert registry.rule_inputs(both, [3, 7], 7, {}.get, checkpoints=["init", "mlm"])["t"] == [
        "s3/init.tsv", "s7/init.tsv", "s3/mlm.tsv", "s7/mlm.tsv"]  # fmt: skip


def test_figures_exist_only_for_their_init_and_analysed_checkpoints():
    every = {f.id for f in registry.active_figures("mlm", ["init", "mlm", "finetuned"])}
    assert every == set(registry.FIGURE_IDS)
    scratch = {f.id for f in registry.active_figures("scratch", ["init", "finetuned"])}
    assert every - scratch == {"mlm_curves"}
    only_init = {f.id for f in registry.active_figures("mlm", ["init"])}
    assert "cone_stream" not in only_init and "cone_checkpoints" in only_init and "data_qc" in only_init


def test_dry_run_of_the_tiny_config_plans_three_checkpoints_per_seed(tmp_path):
    def planned(edits: dict | None = None) -> Counter:
        config = yaml.safe_load(TINY.read_text())
        for block, values in (edits or {}).items():
            config[block] = {**config.get(block, {}), **values}
        path = tmp_path / f"config{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump(config))
        result = snakemake(tmp_path, "-n", "--quiet", "rules", configfile=path)
        return Counter({m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", result.stdout, re.M)})

    mlm = planned()
    assert mlm["init_model"] == mlm["pretrain"] == mlm["train"] == len(SEEDS)
    assert mlm["dump_activations"] == mlm["attention_patterns"] == mlm["cone_index"] == 3 * len(SEEDS)
    assert mlm["match_heads"] == mlm["gate_agreement"] == 3 and mlm["gate_counts"] == 1
    assert mlm["aggregate_seeds"] == 3 * 6 and mlm["fig_mlm_curves"] == 1
    scratch = planned({"model": {"init": "scratch"}})
    assert "pretrain" not in scratch and "fig_mlm_curves" not in scratch
    assert scratch["dump_activations"] == 2 * len(SEEDS) and scratch["init_model"] == len(SEEDS)
    finetuned = planned({"activations": {"checkpoints": ["finetuned"]}})
    assert finetuned["dump_activations"] == len(SEEDS) and finetuned["pretrain"] == len(SEEDS)
    assert finetuned["fig_cone_stream"] == finetuned["fig_cone_checkpoints"] == 1


# ---- the finished tiny run ------------------------------------------------------------------------


@pytest.mark.slow
def test_every_checkpoint_of_every_seed_has_its_outputs(tiny_run):
    results = tiny_run / "results"
    for seed in SEEDS:
        for name in ("model.safetensors", "config.json", "init_info.json"):
            assert (results / f"init/seed{seed}/{name}").is_file()
        for name in ("model.safetensors", "config.json", "pretrain_log.csv", "pretrain_info.json"):
            assert (results / f"pretrained/seed{seed}/{name}").is_file()
        for checkpoint in CHECKPOINTS:
            for name in ACTIVATION_FILES:
                assert (results / f"activations/seed{seed}/{checkpoint}/{name}.parquet").is_file()
            for name in STATS_FILES:
                assert (results / f"stats/seed{seed}/{checkpoint}/{name}.parquet").is_file()
    for checkpoint in CHECKPOINTS:
        for name in ACROSS_SEEDS:
            assert (results / f"stats/all_seeds/{checkpoint}/{name}.parquet").is_file()
    assert not list(results.glob("stats/seed*/*.parquet")) and not list(results.glob("stats/all_seeds/*.parquet"))
    assert (results / "stats/null_model/gates.parquet").is_file()


@pytest.mark.slow
def test_init_weights_are_where_pretraining_and_training_start(tiny_run):
    from transformers import BertForMaskedLM, BertForSequenceClassification

    for seed in SEEDS:
        init_dir, encoder_dir = tiny_run / f"results/init/seed{seed}", tiny_run / f"results/pretrained/seed{seed}"
        init = json.loads((init_dir / "init_info.json").read_text())
        pretrain = json.loads((encoder_dir / "pretrain_info.json").read_text())
        training = json.loads((tiny_run / f"results/models/seed{seed}/training_info.json").read_text())
        assert init["architecture"] == "BertForMaskedLM"
        assert state_digest(BertForMaskedLM.from_pretrained(init_dir)) == init["init_digest"] == pretrain["init_digest"]
        # Fine-tuning starts from the pre-trained encoder: its weights, plus the seed's new head and pooler.
        config = yaml.safe_load(TINY.read_text())
        tokenizer = KmerTokenizer.load(tiny_run / "results/tokens")
        start = build_model(config["model"], config["classes"], tokenizer, seed, encoder=encoder_dir)
        assert isinstance(start, BertForSequenceClassification)
        assert state_digest(start) == training["init_digest"] != pretrain["init_digest"]
        encoder = BertForMaskedLM.from_pretrained(encoder_dir).bert.state_dict()
        for name, tensor in start.bert.encoder.state_dict().items():
            assert torch.equal(tensor, encoder[f"encoder.{name}"]), name
        assert pretrain["steps"] == yaml.safe_load(TINY.read_text())["pretrain"]["steps"]
        assert len(pd.read_csv(encoder_dir / "pretrain_log.csv")) == pretrain["steps"]


@pytest.mark.slow
def test_predictions_are_null_without_a_trained_classifier(tiny_run):
    """init and mlm: pred and correct null, class means over every sequence of the class (the tiny
    config dumps the test split); finetuned: predictions, class means over the correct ones."""
    labels = pq.read_table(tiny_run / "results/tokens/test.parquet", columns=["label"]).column("label").to_numpy()
    per_class = pd.Series(labels).value_counts().sort_index()
    for seed in SEEDS:
        for checkpoint in CHECKPOINTS:
            base = tiny_run / f"results/activations/seed{seed}/{checkpoint}"
            summary = pq.read_table(base / "summary.parquet", columns=["pred", "correct"])
            nulls = summary.num_rows if checkpoint != "finetuned" else 0
            assert summary.column("pred").null_count == summary.column("correct").null_count == nulls, checkpoint
            averaged = pd.read_parquet(base / "class_attention.parquet").groupby("label")["n_seqs"].max()
            if checkpoint == "finetuned":
                assert (averaged <= per_class).all()
            else:
                assert averaged.to_dict() == per_class.to_dict()
            embedding = pq.read_table(tiny_run / f"results/stats/seed{seed}/{checkpoint}/embedding_2d.parquet")
            assert embedding.column("correct").null_count == (embedding.num_rows if checkpoint != "finetuned" else 0)


@pytest.mark.slow
def test_gate_counts_agree_with_the_gate_tables(tiny_run):
    table = pd.read_csv(tiny_run / "results/stats/all_seeds/gate_counts.tsv", sep="\t")
    assert list(table.columns) == ["checkpoint", "seed", "label", "heads", "n_heads"]
    assert len(table) == len(CHECKPOINTS) * len(SEEDS) * len(LABELS)
    for (checkpoint, seed), part in table.groupby(["checkpoint", "seed"]):
        gates = pd.read_parquet(tiny_run / f"results/stats/seed{seed}/{checkpoint}/gates.parquet")
        counts = gates["gate"].value_counts()
        assert part.set_index("label")["heads"].to_dict() == {label: int(counts.get(label, 0)) for label in LABELS}
        assert (part["n_heads"] == len(gates)).all()


@pytest.mark.slow
def test_checkpoint_figures_are_drawn_from_the_real_tables(tiny_run):
    figures = tiny_run / "results/figures"
    for figure_id in ("mlm_curves", "gate_grid_checkpoints", "cone_checkpoints", "attention_checkpoints",
                      "directionality_checkpoints"):  # fmt: skip
        assert (figures / f"{figure_id}.png").stat().st_size > 10_000, figure_id
    agreement = {
        c: pd.read_parquet(tiny_run / f"results/stats/all_seeds/{c}/gate_agreement.parquet") for c in CHECKPOINTS
    }
    fig = checkpoint_figures.plot_gate_grid_checkpoints(agreement)
    assert [ax.get_title() for ax in fig.axes[:3]] == [checkpoint_figures.CHECKPOINT_NAMES[c] for c in CHECKPOINTS]
    cone = {c: pd.read_parquet(tiny_run / f"results/stats/all_seeds/{c}/cone_index.parquet") for c in CHECKPOINTS}
    cone = {c: t[(t["class"] == "all") & (t["split"] == "test")] for c, t in cone.items()}
    names = [checkpoint_figures.CHECKPOINT_NAMES[c] for c in CHECKPOINTS]
    drawn = checkpoint_figures.plot_cone_checkpoints(cone).axes[0].get_lines()
    lines = [line for line in drawn if line.get_label() in names]
    assert [line.get_label() for line in lines] == names
    for line, checkpoint in zip(lines, CHECKPOINTS):  # each line is that checkpoint's per-sequence mean
        rows = cone[checkpoint]
        rows = rows[(rows["head"] == -1) & (rows["variant"] == "ours") & (rows["measure"] == "cone_normalised")
                    & (rows["scope"] == "sequence")]  # fmt: skip
        assert np.sort(line.get_ydata()) == pytest.approx(np.sort(rows["mean"].to_numpy()))
