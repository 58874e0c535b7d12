"""Attention patterns: the seven gates, the cluster partition, domain attention, gate agreement, and
the per-seed tables written from small files in the docs/outputs.md format (K90, entropy and the
masses: tests/test_measures.py)."""

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from snakemake.utils import validate

from bertgeom.data.variants import spike_domains
from bertgeom.io import read_metadata, write_parquet
from bertgeom.measures import attention_measure_names
from bertgeom.stats import attention as att
from bertgeom.stats import gates
from bertgeom.tokens import token_map

N = 122  # [CLS] + 120 k-mers + [SEP]
DOMAINS = ["SP", "NTD", "RBD", "S1_rest", "FP", "HR1", "HR2", "TM", "CT", "S2_rest", "S1", "S2"]


@pytest.fixture(scope="module")
def config(root):
    cfg = {}
    validate(cfg, str(root / "config" / "config.schema.yaml"))  # fills every default
    cfg["classes"] = ["A", "B"]
    return cfg


def pattern(kind: str, n: int = N, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """A synthetic attention matrix of one of the seven types, (1 - noise) pattern + noise random."""
    rng = np.random.default_rng(seed)
    a = np.zeros((n, n))
    rows = np.arange(n)
    if kind == "directional":
        a[:, [10, 50, 90]] = 1
    elif kind == "open":
        a[:] = 1
    elif kind in ("backward_contextual", "forward_contextual"):
        step = -1 if kind == "backward_contextual" else 1
        for d in (1, 2):
            cols = rows + step * d
            ok = (cols >= 0) & (cols < n)
            a[rows[ok], cols[ok]] = 1
        a[a.sum(1) == 0, rows[a.sum(1) == 0]] = 1  # the first/last row have no neighbour: self
    elif kind == "cluster":
        for start in range(1, n - 1, 30):
            a[start : start + 30, start : start + 30] = 1
        a[[0, -1], :] = 1
    elif kind == "instance":
        a[rows, rows] = 1
    elif kind == "closed":
        a[:, [0, -1]] = 1
    a /= a.sum(1, keepdims=True)
    random = rng.dirichlet(np.ones(n), size=n)
    return (1 - noise) * a + noise * random


def absolute(scores: dict, config) -> str:
    return gates.absolute_label(pd.Series({f"score_{g}": v for g, v in scores.items()}), config["patterns"]["thresholds"])


@pytest.mark.parametrize("kind", att.GATES)
def test_seven_types_get_their_absolute_label(kind, config):
    metrics, scores = att.head_gates(pattern(kind), config["patterns"])
    assert absolute(scores, config) == kind, scores
    assert all(0 <= s <= 1 for s in scores.values())


def test_uniform_matrix_is_open(config):
    for n in (20, 40, 427):  # n well above top_keys and window, as for real sequences
        _, scores = att.head_gates(np.full((n, n), 1 / n), config["patterns"])
        assert scores["open"] == pytest.approx(1)
        assert absolute(scores, config) == "open"


def test_two_patterns_at_once_are_multiple(config):
    a = 0.5 * pattern("instance", noise=0) + 0.5 * pattern("closed", noise=0)
    _, scores = att.head_gates(a, config["patterns"])
    assert absolute(scores, config) == "multiple"


def _brute_force_partition(w, min_block):
    """Best modularity over every contiguous partition with blocks >= min_block."""
    n = len(w)
    p = w / w.sum()
    best, best_blocks = -np.inf, None
    for k in range(0, n):
        for cuts in combinations(range(min_block, n - min_block + 1), k):
            bounds = [0, *cuts, n]
            blocks = list(zip(bounds[:-1], bounds[1:]))
            if any(e - s < min_block for s, e in blocks):
                continue
            q = sum(p[s:e, s:e].sum() - p[s:e].sum() * p[:, s:e].sum() for s, e in blocks)
            if q > best:
                best, best_blocks = q, blocks
    return best, best_blocks


def test_contiguous_partition_is_optimal():
    rng = np.random.default_rng(3)
    for trial in range(5):
        w = rng.random((12, 12)) ** 4
        blocks = att.contiguous_partition(w, 3)
        p = w / w.sum()
        q = sum(p[s:e, s:e].sum() - p[s:e].sum() * p[:, s:e].sum() for s, e in blocks)
        best, _ = _brute_force_partition(w, 3)
        assert q == pytest.approx(best)
        assert blocks[0][0] == 0 and blocks[-1][1] == 12 and all(e - s >= 3 for s, e in blocks)


def test_cluster_recovers_blocks_and_ignores_bands():
    a = pattern("cluster", noise=0)
    score, blocks = att.cluster_score(a, window=4, min_block=8)
    assert blocks == 4  # 1..30, 31..60, 61..90, 91..120 (+ [CLS]/[SEP] folded into the ends)
    assert score > 0.6
    for kind in ("backward_contextual", "instance", "directional", "closed"):
        assert att.cluster_score(pattern(kind, noise=0), 4, 8)[0] == pytest.approx(0, abs=1e-9), kind
    assert att.cluster_score(np.full((N, N), 1 / N), 4, 8)[0] == pytest.approx(0, abs=1e-9)


def test_matrix_metrics_known_values():
    a = pattern("closed", noise=0)
    metrics = att.matrix_metrics(a, window=2, top_keys=5, min_block=8, n_singular=3, rank_tol=1e-3)
    assert metrics["mass_cls"] == pytest.approx(0.5) and metrics["mass_sep"] == pytest.approx(0.5)
    assert metrics["col_top5"] == pytest.approx(0)
    assert metrics["rank"] == 1 and metrics["sv1_share"] == pytest.approx(1)
    assert metrics["sv1"] == pytest.approx(np.linalg.norm(a, 2))
    assert {"sv1", "sv2", "sv3"} <= metrics.keys() and "sv4" not in metrics


# ---------------------------------------------------------------------------------------------
# The per-seed tables from files in the docs/outputs.md format
# ---------------------------------------------------------------------------------------------

KINDS = {(0, 0): "closed", (0, 1): "instance", (1, 0): "backward_contextual", (1, 1): "open"}


def write_inputs(tmp_path, corrupt=False, top_keys=5):
    """attention_summary, attention (subset), class_attention and token_map for 2 layers x 2 heads
    (attention_summary's col_top{k} column for the default patterns.top_keys)."""
    rng = np.random.default_rng(0)
    seqs = [("s0", 0, N), ("s1", 1, N), ("s2", 0, N - 3)]
    rows = []
    for i, (seq_id, label, n) in enumerate(seqs):
        for (layer, head), kind in KINDS.items():
            a = pattern(kind, n=n, seed=i)
            if corrupt and i == 1 and layer == 1:
                a[5] *= 2
            rows.append({"seq_id": seq_id, "split": "test", "label": label, "pred": label, "correct": True,
                         "layer": layer, "head": head, "n": n, "matrix": a.astype(np.float16).reshape(-1)})  # fmt: skip
    frame = pd.DataFrame(rows)
    schema = pa.schema(
        [("seq_id", pa.string()), ("split", pa.string()), ("label", pa.int16()), ("pred", pa.int16()), ("correct", pa.bool_()),
         ("layer", pa.int16()), ("head", pa.int16()), ("n", pa.int32()), ("matrix", pa.list_(pa.float16()))]  # fmt: skip
    )
    write_parquet(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), tmp_path / "attention.parquet")
    summary = frame.drop(columns="matrix")
    for measure in attention_measure_names(top_keys):
        summary[measure] = rng.random(len(summary))
    write_parquet(
        summary.astype({"label": "int16", "layer": "int16", "head": "int16"}), tmp_path / "attention_summary.parquet"
    )
    classes = []
    for label in (0, 1):
        for (layer, head), kind in KINDS.items():
            classes.append({"label": label, "class": "AB"[label], "layer": layer, "head": head, "n_seqs": 1, "length": N,
                            "matrix": pattern(kind, seed=9).astype(np.float32).reshape(-1)})  # fmt: skip
    write_parquet(pd.DataFrame(classes), tmp_path / "class_attention.parquet")
    variants = Path(__file__).resolve().parents[1] / "resources" / "variants.yaml"
    write_parquet(token_map(512, 12, 9, spike_domains(variants)), tmp_path / "token_map.parquet")
    null = [{"seq_id": seq_id, "layer": layer, "head": head, "score_closed": 2 / n, "row_closed": np.full(n, 2 / n)}
            for seq_id, _, n in seqs for layer in (0, 1) for head in (0, 1)]  # an untrained model: uniform rows
    write_parquet(pd.DataFrame(null), tmp_path / "null_scores.parquet")
    return tmp_path


def test_attention_tables_from_files(tmp_path, config, root):
    write_inputs(tmp_path)
    tables = att.attention_tables(
        str(tmp_path / "attention_summary.parquet"),
        str(tmp_path / "attention.parquet"),
        str(tmp_path / "class_attention.parquet"),
        str(tmp_path / "token_map.parquet"),
        str(root / "resources" / "variants.yaml"),
        str(tmp_path / "null_scores.parquet"),
        config["patterns"],
        config["classes"],
        seed=7,
        batch_rows=5,  # several record batches
    )
    labels = tables["gates"].set_index(["layer", "head"])
    assert {key: labels.loc[key, "gate"] for key in KINDS} == KINDS
    assert {key: labels.loc[key, "gate_absolute"] for key in KINDS} == KINDS
    assert (labels["n_seqs"] == 3).all()
    assert len(tables["gate_tests"]) == 4 * len(gates.STRUCTURED) and len(tables["row_gates"]) == 4 * 11

    patterns = tables["patterns"]
    assert list(patterns.columns) == ["seed", "layer", "head", "source", "measure", "value"]
    assert not patterns.duplicated(["seed", "layer", "head", "source", "measure"]).any()
    assert set(patterns["source"]) == {"all", "subset"}
    subset = patterns[patterns["source"] == "subset"].set_index(["layer", "head", "measure"])["value"]
    assert subset[(0, 0, "score_closed")] == pytest.approx(labels.loc[(0, 0), "score_closed"])
    summary = pd.read_parquet(tmp_path / "attention_summary.parquet")
    mean_entropy = summary.groupby(["layer", "head"])["entropy"].mean()
    everything = patterns[patterns["source"] == "all"].set_index(["layer", "head", "measure"])["value"]
    assert everything[(1, 0, "entropy")] == pytest.approx(mean_entropy[(1, 0)])

    k90 = tables["k90"]
    assert len(k90) == 4 * (N + N + N - 3)
    open_rows = k90[(k90["layer"] == 1) & (k90["head"] == 1)]
    assert open_rows["k90"].min() > 0.6 * N  # near-uniform rows need most keys
    assert set(k90["class"]) == {"A", "B"}

    domains = tables["domains"]
    assert not domains.duplicated(["seed", "layer", "head", "domain", "measure"]).any()
    assert set(domains["domain"]) == set(DOMAINS)
    rbd = domains[(domains["domain"] == "RBD") & (domains["layer"] == 1) & (domains["head"] == 1)].set_index("measure")[
        "value"
    ]
    assert rbd["share"] == pytest.approx(rbd["expected"], abs=0.02)  # an open head: no domain preference
    assert {"t", "df", "p", "p_fdr", "p_bonferroni", "significant", "share_classes", "n_seqs"} <= set(rbd.index)


def test_run_writes_every_output_and_rejects_bad_rows(tmp_path, config, root):
    write_inputs(tmp_path)
    names = ("patterns", "gates", "gate_tests", "row_gates", "k90", "domains")
    outputs = {name: str(tmp_path / "out" / f"{name}.parquet") for name in names}
    att.write_attention_patterns(
        summary=str(tmp_path / "attention_summary.parquet"),
        attention=str(tmp_path / "attention.parquet"),
        class_attention=str(tmp_path / "class_attention.parquet"),
        token_map=str(tmp_path / "token_map.parquet"),
        variants=str(root / "resources" / "variants.yaml"),
        null_scores=str(tmp_path / "null_scores.parquet"),
        outputs=outputs,
        patterns=config["patterns"],
        classes=config["classes"],
        seed=2,
        batch_rows=100,
    )
    for path in outputs.values():
        assert pq.read_table(path).num_rows > 0 and "config_sha256" in read_metadata(path)
    assert set(pq.read_table(outputs["gates"]).column("seed").to_pylist()) == {2}

    bad = tmp_path / "bad"
    bad.mkdir()
    write_inputs(bad, corrupt=True)
    with pytest.raises(ValueError, match=r"attention\.parquet: record seq_id=s1.*sum to 1"):
        list(att.iter_attention(str(bad / "attention.parquet")))
