"""The base-shape rehearsal (issue 17): config/rehearsal.yaml end to end at the paper's shapes
(12 layers x 12 heads, hidden 768, 512 tokens) from a local random checkpoint with a WordPiece
vocabulary of bert-base-cased's size (bertgeom.rehearsal), no network. A few minutes on 2 cores."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from workflow import ROOT, snakemake

from bertgeom.rehearsal import BERT_BASE_CASED_VOCAB, SPECIAL_IDS, wordpiece_vocab, write_random_checkpoint
from bertgeom.token_vectors import TokenFile

REHEARSAL = ROOT / "config" / "rehearsal.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("rehearsal")
    write_random_checkpoint(workdir / "rehearsal" / "bert-base-random")
    snakemake(workdir, "--cores", "2", configfile=REHEARSAL, env={"OMP_NUM_THREADS": "1"})
    return workdir


def test_wordpiece_vocab_keeps_bert_base_cased_ids():
    vocab = wordpiece_vocab()
    assert len(vocab) == len(set(vocab)) == BERT_BASE_CASED_VOCAB
    assert all(vocab[i] == token for token, i in SPECIAL_IDS.items())
    assert not any(set(token.lstrip("#")) <= set("ACGT") for token in vocab)  # every k-mer is new


def test_every_stage_runs_at_base_shape(rehearsal):
    config = json.loads((rehearsal / "results/models/seed0/config.json").read_text())
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["hidden_size"]) == (12, 12, 768)
    assert config["max_position_embeddings"] == 512
    # the k-mers were appended to the full WordPiece vocabulary, whose ids stayed where they were
    assert config["vocab_size"] > BERT_BASE_CASED_VOCAB + 100
    steps = pd.read_csv(rehearsal / "results/models/seed0/train_log.csv")
    assert steps.step.tolist() == [1, 2]  # 5 training sequences in batches of 4 (the paper's)
    tokens = pq.read_table(rehearsal / "results/tokens/test.parquet", columns=["input_ids"])
    assert tokens.schema.field("input_ids").type.list_size == 512
    # the token-level subset: every (layer, stage) in its own row groups, vectors of width 768
    subset = TokenFile(rehearsal / "results/activations/seed0/finetuned/tokens.parquet")
    assert {layer for layer, _ in subset.keys()} == set(range(12))
    _, x = next(subset.sequences(11, "output"))
    assert x.shape[1] == 768 and 2 < len(x) <= 512
    cone = pd.read_parquet(rehearsal / "results/stats/seed0/finetuned/cone_index.parquet")
    isoscore = cone[(cone.scope == "subset") & (cone.measure == "isoscore") & (cone["class"] == "all")]
    assert set(isoscore.layer) == set(range(12)) and isoscore.value.between(0, 1).all()
    figures = list((rehearsal / "results/figures").rglob("*.pdf"))
    assert figures, "no figure was drawn"


def test_plan_projects_the_rehearsal_stages(rehearsal, monkeypatch):
    """`bertgeom plan` on the rehearsal config, from the run's directory, names every stage it
    projects and reads the run's measured seconds beside them (the ratios themselves are
    machine-dependent: docs/benchmarks.md)."""
    from bertgeom.plan import plan

    monkeypatch.chdir(rehearsal)
    text, disk = plan(str(REHEARSAL), measured="results/benchmarks")
    for stage in ("train", "dump_activations", "cone_index", "attention_patterns", "null_model", "directionality"):
        line = next(line for line in text.splitlines() if line.startswith(stage))
        assert len(line.split()) >= 9, f"no measured time beside the projection: {line}"
    dumped = sum(p.stat().st_size for p in (rehearsal / "results/activations/seed0/finetuned").glob("*.parquet"))
    assert 0.5 < (disk - _model_disk(rehearsal)) / dumped < 2  # the dump's projected bytes


def _model_disk(workdir) -> float:
    """The projected bytes of the train stage (model + checkpoint), to leave them out above."""
    from bertgeom.config import load_config
    from bertgeom.plan import CALIBRATION, project, workload

    work = workload(load_config(REHEARSAL), ROOT)
    stages = project(work, json.loads(CALIBRATION.read_text()), 989.4, 0.4)
    return sum(st.disk * st.runs for st in stages if st.name != "dump_activations")
