"""bertgeom.activations and bertgeom.hooks: exact per-head tensors, PAD-free statistics, Parquet
round trip, DuckDB (the measures themselves: tests/test_measures.py).

A tiny BertForSequenceClassification (hidden 32, 2 layers, 2 heads, max_length 64) is trained for
a few steps on synthetic token sequences whose class shows in the tokens, saved with
save_pretrained, and dumped once per session.
"""

import copy
import math
import subprocess
import sys

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from snakemake.utils import validate

from bertgeom import activations as act
from bertgeom import io, token_vectors
from bertgeom.activations import loop
from bertgeom.hooks import HEAD_STAGES, STAGES, capture, capture_batch, hook_names
from bertgeom.measures import real_mask
from bertgeom.model import EXACT_ATTENTION, load_model

MAX_LENGTH = 64
HIDDEN, HEADS, LAYERS = 32, 2, 2
D_HEAD = HIDDEN // HEADS
PAD, CLS, SEP, FIRST_KMER, VOCAB = 0, 2, 3, 5, 60
N_SEQS = 20

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def config(root):
    """config/tiny.yaml with the schema's defaults filled in, small batches, every sequence in the subset."""
    cfg = yaml.safe_load((root / "config" / "tiny.yaml").read_text())
    validate(cfg, str(root / "config" / "config.schema.yaml"))
    cfg["activations"].update(batch_size=3, subset_per_class=100, device="cpu")
    return cfg


def make_tokens(path, classes, seed=0, pad_id=PAD, width=MAX_LENGTH):
    """A tokens parquet as the tokens stage writes it: class c uses k-mer ids from its own range."""
    rng = np.random.default_rng(seed)
    rows = {"seq_id": [], "class": [], "label": [], "lineage": [], "input_ids": [], "n_tokens": []}
    per = (VOCAB - FIRST_KMER) // len(classes)
    for i in range(N_SEQS):
        label = i % len(classes)
        n = int(rng.integers(12, 52))  # never the full 64: the PAD tests cut the padding to 52
        ids = np.full(MAX_LENGTH, pad_id, dtype=np.int32)
        ids[0], ids[n - 1] = CLS, SEP
        own = rng.integers(FIRST_KMER + label * per, FIRST_KMER + (label + 1) * per, n - 2)
        mixed = rng.integers(FIRST_KMER, VOCAB, n - 2)
        ids[1 : n - 1] = np.where(rng.random(n - 2) < 0.7, own, mixed)
        rows["seq_id"].append(f"synthetic-{classes[label]}-{i:03d}")
        rows["class"].append(classes[label])
        rows["label"].append(label)
        rows["lineage"].append("x")
        rows["input_ids"].append(ids[:width])
        rows["n_tokens"].append(n)
    table = pa.table(
        {
            **{k: v for k, v in rows.items() if k != "input_ids"},
            "label": pa.array(rows["label"], pa.int16()),
            "n_tokens": pa.array(rows["n_tokens"], pa.int32()),
            "input_ids": io.fixed_size_list(np.stack(rows["input_ids"]), pa.int32()),
        }
    )
    io.write_parquet(table, path)
    return table


def real_mask_np(n, width=MAX_LENGTH):
    return np.arange(width)[None, :] < np.asarray(n)[:, None]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, config):
    """A tiny BERT classifier, trained for a few steps so attention is not uniform, saved to disk."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    classes = config["classes"]
    bert_config = BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=64, max_position_embeddings=MAX_LENGTH, initializer_range=0.2,
        id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)},
        attn_implementation="eager",
    )  # fmt: skip
    model = BertForSequenceClassification(bert_config)
    base = tmp_path_factory.mktemp("model")
    table = make_tokens(base / "train.parquet", classes, seed=1)
    ids = torch.from_numpy(io.to_matrix(table.column("input_ids")).astype(np.int64))
    mask = torch.from_numpy(real_mask_np(table.column("n_tokens").to_numpy())).long()
    labels = torch.from_numpy(table.column("label").to_numpy().astype(np.int64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(15):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(base / "seed0")
    return base / "seed0"


def run_dump(tmp, model_dir, config, tokens_path):
    outputs = {name: tmp / f"{name}.parquet" for name in act.OUTPUT_FILES}
    act.dump(model_dir, {"test": tokens_path}, outputs, config["classes"], config["activations"], config["patterns"]["top_keys"])
    return outputs


@pytest.fixture(scope="module")
def dumped(tmp_path_factory, model_dir, config):
    tmp = tmp_path_factory.mktemp("dump")
    tokens = make_tokens(tmp / "test.parquet", config["classes"])
    return run_dump(tmp, model_dir, config, tmp / "test.parquet"), tokens


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir, attn_implementation="eager")


def batch_inputs(tokens, rows=slice(0, 6)):
    ids = torch.from_numpy(io.to_matrix(tokens.column("input_ids")).astype(np.int64))[rows]
    n = torch.from_numpy(tokens.column("n_tokens").to_numpy().astype(np.int64))[rows]
    return ids, n, real_mask(n, ids.shape[1]).long()


# --- exactness --------------------------------------------------------------------------------


def test_captured_tensors_equal_transformers_outputs(model, dumped):
    ids, n, mask = batch_inputs(dumped[1])
    logits, cap = capture_batch(model, ids, mask)
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert sorted(cap) == sorted(hook_names(LAYERS))
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=0)
    for i in range(LAYERS):
        torch.testing.assert_close(cap[f"layer.{i}.attn"], ref.attentions[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(cap[f"layer.{i}.input"], ref.hidden_states[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(cap[f"layer.{i}.output"], ref.hidden_states[i + 1], atol=1e-5, rtol=0)
    # Masked: real query rows put all their mass on real keys.
    attn = cap["layer.0.attn"]
    real = real_mask(n, ids.shape[1])
    assert float(attn.masked_fill(real[:, None, None, :], 0).abs().max()) == 0.0
    torch.testing.assert_close(attn.sum(-1), torch.ones_like(attn.sum(-1)))


def layer_norm(x, module):
    """LayerNorm written out: (x - mean) / sqrt(var + eps) * gamma + beta."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + module.eps) * module.weight + module.bias


@torch.no_grad()
def test_stages_recomputed_from_weights(model, dumped):
    """Per-head Q/K/V from the ROW slices of W with biases, masked A, Z = A V, W_O, LayerNorms, FFN."""
    ids, n, mask = batch_inputs(dumped[1])
    _, cap = capture_batch(model, ids, mask)
    neg = torch.where(mask.bool(), 0.0, -torch.inf)[:, None, :]  # [batch, 1, key]
    for i, block in enumerate(model.bert.encoder.layer):
        x = cap[f"layer.{i}.input"]
        sa, so = block.attention.self, block.attention.output
        heads = []
        for h in range(HEADS):
            rows = slice(h * D_HEAD, (h + 1) * D_HEAD)
            q = x @ sa.query.weight[rows].T + sa.query.bias[rows]
            k = x @ sa.key.weight[rows].T + sa.key.bias[rows]
            v = x @ sa.value.weight[rows].T + sa.value.bias[rows]
            for name, mine in (("q", q), ("k", k), ("v", v)):
                torch.testing.assert_close(cap[f"layer.{i}.{name}"][..., rows], mine, atol=1e-5, rtol=0)
            a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(D_HEAD) + neg, dim=-1)
            torch.testing.assert_close(cap[f"layer.{i}.attn"][:, h], a, atol=1e-5, rtol=0)
            z = a @ v
            torch.testing.assert_close(cap[f"layer.{i}.context"][..., rows], z, atol=1e-5, rtol=0)
            heads.append(z)
        attn_output = torch.cat(heads, -1) @ so.dense.weight.T + so.dense.bias
        torch.testing.assert_close(cap[f"layer.{i}.attn_output"], attn_output, atol=1e-5, rtol=0)
        attn_ln = layer_norm(attn_output + x, so.LayerNorm)
        torch.testing.assert_close(cap[f"layer.{i}.attn_ln"], attn_ln, atol=1e-5, rtol=0)
        hidden = attn_ln @ block.intermediate.dense.weight.T + block.intermediate.dense.bias
        gelu = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
        ffn = gelu @ block.output.dense.weight.T + block.output.dense.bias
        torch.testing.assert_close(cap[f"layer.{i}.ffn"], ffn, atol=1e-5, rtol=0)
        torch.testing.assert_close(cap[f"layer.{i}.output"], layer_norm(ffn + attn_ln, block.output.LayerNorm), atol=1e-5, rtol=0)


def test_capture_refuses_sdpa_and_training_mode(model_dir):
    from transformers import BertForSequenceClassification

    sdpa = BertForSequenceClassification.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    with pytest.raises(ValueError, match="eager"):
        with capture(sdpa, lambda *a: None):
            pass
    eager = load_model(model_dir, attn_implementation="eager").train()
    with pytest.raises(ValueError, match="eval"):
        with capture(eager, lambda *a: None):
            pass


# --- the subset ---------------------------------------------------------------------------------


def test_subset_ids_first_by_seq_id_within_class():
    index = pa.table({"seq_id": ["b2", "a9", "a1", "c1", "b1"], "label": [1, 0, 0, 2, 1]})
    assert act.subset_ids(index, 1) == {"a1", "b1", "c1"}
    assert act.subset_ids(index, 2) == {"a1", "a9", "b1", "b2", "c1"}
    assert act.subset_ids(index, 0) == set()


# --- the dump ---------------------------------------------------------------------------------


def test_files_round_trip_through_pyarrow(dumped, model, model_dir, config):
    outputs, tokens = dumped
    n_tokens = dict(zip(tokens.column("seq_id").to_pylist(), tokens.column("n_tokens").to_pylist()))
    expected_rows = {
        "summary": N_SEQS * LAYERS * len(STAGES),
        "heads": N_SEQS * LAYERS * HEADS * len(HEAD_STAGES),
        "attention_summary": N_SEQS * LAYERS * HEADS,
        "tokens": sum(n_tokens.values()) * LAYERS * len(STAGES),
        "attention": N_SEQS * LAYERS * HEADS,
        "class_attention": len(config["classes"]) * LAYERS * HEADS,
    }
    schemas = act.schemas(HIDDEN, D_HEAD, config["patterns"]["top_keys"])
    for name, path in outputs.items():
        table = pq.read_table(path)
        assert table.num_rows == expected_rows[name], name
        assert table.schema.remove_metadata() == schemas[name], name
        meta = io.read_metadata(path)
        assert meta["model_sha256"] == io.model_hash(model_dir)
        used = {"classes": config["classes"], "activations": config["activations"], "patterns": {"top_keys": config["patterns"]["top_keys"]}}
        assert meta["config_sha256"] == io.config_hash(used)
        assert meta["file"] == name and meta["layers"] == LAYERS
        assert pq.read_metadata(path).row_group(0).column(0).compression == "ZSTD"
    summary = pq.read_table(outputs["summary"]).to_pandas()
    assert (summary["n"] == summary["seq_id"].map(n_tokens)).all()
    assert list(summary["stage"][: len(STAGES)]) == list(STAGES)
    # pred / correct agree with the model's own logits
    ids, n, mask = batch_inputs(tokens, slice(None))
    with torch.inference_mode():
        preds = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).numpy()
    by_seq = summary.groupby("seq_id", sort=False)[["pred", "label", "correct"]].first()
    np.testing.assert_array_equal(by_seq["pred"].to_numpy(), preds)
    assert (by_seq["correct"] == (by_seq["pred"] == by_seq["label"])).all()
    assert 0 < by_seq["correct"].sum()


def test_summary_equals_statistics_of_captured_tensors(dumped, model):
    """Spot check of the stored numbers against the captured layer outputs (fp32)."""
    outputs, tokens = dumped
    ids, n, mask = batch_inputs(tokens, slice(0, 4))
    _, cap = capture_batch(model, ids, mask)
    summary = pq.read_table(outputs["summary"], filters=[("layer", "=", 1), ("stage", "=", "output")])
    seq_ids = tokens.column("seq_id").to_pylist()[:4]
    rows = {s: i for i, s in enumerate(summary.column("seq_id").to_pylist())}
    for b, seq in enumerate(seq_ids):
        x = cap["layer.1.output"][b].numpy().astype(np.float64)
        real, pad_all = x[: int(n[b])], x
        unit = real / np.linalg.norm(real, axis=1, keepdims=True)
        r = rows[seq]
        np.testing.assert_allclose(io.to_matrix(summary.column("sum_unit"))[r], unit.sum(0), atol=1e-4)
        np.testing.assert_allclose(io.to_matrix(summary.column("mean_vec"))[r], real.mean(0), atol=1e-5)
        np.testing.assert_allclose(summary.column("sum_sq_norm")[r].as_py(), (real**2).sum(), rtol=1e-5)
        np.testing.assert_allclose(io.to_matrix(summary.column("cls_vec"))[r], x[0], atol=2e-3)
        ref = np.linalg.norm((pad_all / np.linalg.norm(pad_all, axis=1, keepdims=True)).sum(0))
        np.testing.assert_allclose(summary.column("cone_ref")[r].as_py(), ref, rtol=1e-5)


def test_sufficient_statistics_reproduce_cone_index_from_tokens(dumped):
    """The cone index from (n, sum_unit) equals the one computed from the stored token vectors,
    per sequence and pooled over sequences (the point of sufficient statistics)."""
    outputs, _ = dumped
    summary = pq.read_table(outputs["summary"]).to_pandas()
    tokens = token_vectors.TokenFile(outputs["tokens"])
    assert sorted(tokens.keys()) == sorted((layer, stage) for layer in range(LAYERS) for stage in STAGES)
    for layer, stage in tokens.keys():
        stats = summary[(summary.layer == layer) & (summary.stage == stage)].set_index("seq_id")
        pooled_unit, pooled_n, pooled_tokens = 0, 0, []
        for seq, vecs in tokens.sequences(layer, stage):
            unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
            direct = np.linalg.norm(unit.sum(0)) / len(vecs)
            row = stats.loc[seq]
            assert row["n"] == len(vecs)
            from_stats = np.linalg.norm(row["sum_unit"]) / row["n"]
            assert abs(direct - from_stats) < 1e-4, (layer, stage, seq)
            # float16 rounds each delta by at most 2^-12 scale (scale ~ 4 here)
            np.testing.assert_allclose(row["mean_vec"], vecs.mean(0), atol=1e-3, rtol=0)
            np.testing.assert_allclose(row["sum_sq_norm"], (vecs**2).sum(), rtol=1e-4)
            pooled_unit = pooled_unit + row["sum_unit"]
            pooled_n += row["n"]
            pooled_tokens.append(unit)
        direct = np.linalg.norm(np.concatenate(pooled_tokens).sum(0)) / pooled_n
        assert abs(direct - np.linalg.norm(pooled_unit) / pooled_n) < 1e-4


def test_token_vectors_are_float16_deviations_from_the_float32_mean(dumped, model):
    """tokens.parquet: one (layer, stage) per row group; center = summary's mean_vec bit for bit,
    scale a power of two >= max |delta|; x = center + scale delta within float16's rounding of delta."""
    outputs, tokens = dumped
    meta = pq.ParquetFile(outputs["tokens"]).metadata
    assert meta.num_row_groups == LAYERS * len(STAGES)  # every batch fits one flush here
    first = pq.read_table(outputs["tokens"]).slice(0, 3).to_pydict()
    assert first["center"][0] is not None and first["center"][1] is None and first["scale"][1] is None
    ids, n, mask = batch_inputs(tokens, slice(0, 4))
    _, cap = capture_batch(model, ids, mask)
    summary = pq.read_table(outputs["summary"], filters=[("layer", "=", 1), ("stage", "=", "attn_output")]).to_pandas()
    means = summary.set_index("seq_id")["mean_vec"]
    table = next(token_vectors.TokenFile(outputs["tokens"]).vectors(1, "attn_output", ["seq_id", "center", "scale", "delta"]))[0]
    rows = table.to_pandas()
    for b, seq in enumerate(tokens.column("seq_id").to_pylist()[:4]):
        mine = rows[rows.seq_id == seq]
        center, scale = mine["center"].iloc[0], mine["scale"].iloc[0]
        np.testing.assert_array_equal(center, means[seq])  # the same float32 numbers
        delta = np.stack(mine["delta"].to_numpy()).astype(np.float64)
        assert math.log2(scale).is_integer() and np.abs(delta).max() <= 1 and np.abs(delta).max() > 0.5
        x = cap["layer.1.attn_output"][b, : int(n[b])].numpy().astype(np.float64)
        error = np.abs(center + scale * delta - x).max()
        assert error <= scale * 2**-11, (seq, error, scale)


def test_heads_are_row_slices_of_the_stage_vectors(dumped):
    """heads.parquet head h of q/k/v/z equals the statistics of columns h*d:(h+1)*d of q/k/v/context."""
    outputs, _ = dumped
    heads = pq.read_table(outputs["heads"]).to_pandas().set_index(["seq_id", "layer", "head", "stage"])
    source = {"q": "q", "k": "k", "v": "v", "context": "z"}
    for layer in range(LAYERS):
        for stage in source:
            for seq, vecs in token_vectors.TokenFile(outputs["tokens"]).sequences(layer, stage):
                for h in range(HEADS):
                    block = vecs[:, h * D_HEAD : (h + 1) * D_HEAD]
                    row = heads.loc[(seq, layer, h, source[stage])]
                    unit = block / np.linalg.norm(block, axis=1, keepdims=True)
                    np.testing.assert_allclose(row["sum_unit"], unit.sum(0), atol=2e-3)
                    np.testing.assert_allclose(row["mean_vec"], block.mean(0), atol=1e-3, rtol=0)
                    assert row["n"] == len(vecs)


def test_attention_summary_recomputed_from_attention_matrices(dumped):
    """Each measure of attention_summary, recomputed in numpy from the stored matrices (float16)."""
    outputs, _ = dumped
    summary = pq.read_table(outputs["attention_summary"]).to_pandas().set_index(["seq_id", "layer", "head"])
    matrices = pq.read_table(outputs["attention"]).to_pandas()
    for _, rec in matrices.iterrows():
        n = rec["n"]
        a = np.asarray(rec["matrix"], dtype=np.float64).reshape(n, n)
        np.testing.assert_allclose(a.sum(1), 1, atol=5e-3)
        row = summary.loc[(rec["seq_id"], rec["layer"], rec["head"])]
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.nansum(np.where(a > 0, a * np.log(a), 0), axis=1) / np.log(n)
        k90 = np.array([np.searchsorted(np.cumsum(np.sort(r)[::-1]), 0.9 * r.sum()) + 1 for r in a])
        cols = a.sum(0)[1 : n - 1]
        unit = a / np.linalg.norm(a, axis=1, keepdims=True)
        expected = {
            "entropy": entropy.mean(), "mass_cls": a[:, 0].mean(), "mass_sep": a[:, n - 1].mean(),
            "mass_self": np.diag(a).mean(), "mass_prev": np.diag(a, -1).sum() / n, "mass_next": np.diag(a, 1).sum() / n,
            "col_top5": np.sort(cols)[::-1][:5].sum() / n, "attn_cone": np.linalg.norm(unit.sum(0)) / n,
        }  # fmt: skip
        for name, value in expected.items():
            assert abs(row[name] - value) < 5e-3, (name, row[name], value)
        # k90 is a count: float16 rounding can move a row's count by one key at the 90% boundary
        assert abs(row["k90"] - k90.mean()) <= 1.0
        assert row["k90_q10"] <= row["k90_q50"] <= row["k90_q90"] <= n
        assert row["attn_cone_ref"] >= row["attn_cone"] * n - 1e-3  # PAD rows only add


def assert_class_means(outputs, classes, averaged):
    """class_attention is the mean of the subset's matrices over the rows `averaged` selects."""
    att = pq.read_table(outputs["attention"]).to_pandas()
    chosen = att[averaged(att)]
    for _, rec in pq.read_table(outputs["class_attention"]).to_pandas().iterrows():
        assert rec["class"] == classes[rec["label"]]
        mine = chosen[(chosen["label"] == rec["label"]) & (chosen["layer"] == rec["layer"]) & (chosen["head"] == rec["head"])]
        assert rec["n_seqs"] == len(mine)
        if not len(mine):
            assert rec["length"] == 0 and len(rec["matrix"]) == 0
            continue
        length = rec["length"]
        assert length == mine["n"].max()
        total, count = np.zeros((length, length)), np.zeros((length, length))
        for _, m in mine.iterrows():
            total[: m["n"], : m["n"]] += np.asarray(m["matrix"], dtype=np.float64).reshape(m["n"], m["n"])
            count[: m["n"], : m["n"]] += 1
        np.testing.assert_allclose(np.asarray(rec["matrix"]).reshape(length, length), total / count, atol=2e-3)


def test_class_attention_is_mean_over_correct_sequences(dumped, config):
    assert_class_means(dumped[0], config["classes"], lambda att: att["correct"])


def test_without_a_classifier_predictions_are_null_and_classes_average_every_sequence(tmp_path, dumped, model_dir, config):
    """classifier=False (checkpoints init, mlm): pred and correct null in every file, class means over
    every sequence of the class; every other column as with the classifier."""
    outputs = {name: tmp_path / f"{name}.parquet" for name in act.OUTPUT_FILES}
    tokens = dumped[0]["summary"].parent / "test.parquet"
    act.dump(model_dir, {"test": tokens}, outputs, config["classes"], config["activations"],
             config["patterns"]["top_keys"], classifier=False)  # fmt: skip
    for name in ("summary", "heads", "attention_summary", "tokens", "attention"):
        table = pq.read_table(outputs[name])
        assert table.column("pred").null_count == table.column("correct").null_count == table.num_rows > 0, name
        base = pq.read_table(dumped[0][name])
        assert base.column("pred").null_count == 0, name
        assert table.drop_columns(["pred", "correct"]).equals(base.drop_columns(["pred", "correct"])), name
    assert_class_means(outputs, config["classes"], lambda att: np.ones(len(att), dtype=bool))
    assert pq.read_table(outputs["class_attention"]).column("n_seqs").to_numpy().sum() == N_SEQS * LAYERS * HEADS


def assert_same_dump(base_outputs, other_outputs, differ=(), label=""):
    """Every file has the same rows and values (float16 within 2e-3, float32 within 1e-4), except
    that the columns in `differ` must change."""
    for file in act.OUTPUT_FILES:
        base, other = pq.read_table(base_outputs[file]), pq.read_table(other_outputs[file])
        assert base.num_rows == other.num_rows, (label, file)
        for column in base.column_names:
            a, b = base.column(column), other.column(column)
            if column in differ:
                assert not np.allclose(a.to_numpy(), b.to_numpy()), (label, file, column)
            elif pa.types.is_floating(a.type) or pa.types.is_list(a.type) or pa.types.is_fixed_size_list(a.type):
                x = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in a.to_pylist()])
                y = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in b.to_pylist()])
                tol = 2e-3 if "halffloat" in str(a.type) else 1e-4
                np.testing.assert_allclose(x, y, atol=tol, rtol=1e-4, err_msg=f"{label} {file} {column}")
            else:
                assert a.equals(b), (label, file, column)


def test_pad_never_enters_any_statistic(tmp_path, dumped, model_dir, config):
    """Other PAD token ids, or a shorter padding, change cone_ref / attn_cone_ref and nothing else."""
    for name, kwargs in {"pad_ids": dict(pad_id=7), "short": dict(width=52)}.items():
        (tmp_path / name).mkdir()
        make_tokens(tmp_path / name / "test.parquet", config["classes"], **kwargs)
        out = run_dump(tmp_path / name, model_dir, config, tmp_path / name / "test.parquet")
        assert_same_dump(dumped[0], out, differ=("cone_ref", "attn_cone_ref"), label=name)


def test_in_place_attention_is_eager_bit_for_bit(model_dir, dumped):
    """The dump's attention implementation gives exactly eager's A, hidden states and logits."""
    ids, _, mask = batch_inputs(dumped[1])
    eager = load_model(model_dir, attn_implementation="eager")
    in_place = load_model(model_dir, attn_implementation=EXACT_ATTENTION)
    assert in_place.config._attn_implementation == EXACT_ATTENTION  # not a silent fallback to eager
    with torch.inference_mode():
        ref = eager(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        out = in_place(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    assert torch.equal(ref.logits, out.logits)
    for a, b in zip((*ref.attentions, *ref.hidden_states), (*out.attentions, *out.hidden_states), strict=True):
        assert torch.equal(a, b)


def test_exact_attention_loads_without_the_activations_package(model_dir):
    """bertgeom.model registers its kernel when a model asks for it: in a fresh interpreter that
    never imports bertgeom.activations, load_model runs bertgeom_eager and returns A."""
    code = f"""
import sys, torch
from bertgeom.model import EXACT_ATTENTION, load_model
model = load_model({str(model_dir)!r}, attn_implementation=EXACT_ATTENTION)
out = model(input_ids=torch.tensor([[{CLS}, {FIRST_KMER}, {FIRST_KMER + 1}, {SEP}]]), output_attentions=True)
assert model.config._attn_implementation == EXACT_ATTENTION
assert out.attentions[0].shape == (1, {HEADS}, 4, 4)
assert not [name for name in sys.modules if name.startswith("bertgeom.activations")]
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_dump_does_not_depend_on_cpu_chunking(tmp_path, dumped, model_dir, config, monkeypatch):
    """One sequence per forward pass (cache-sized CPU chunks) gives the dump of batches of 3."""
    monkeypatch.setattr(loop, "CPU_SCORES_BYTES", 1)
    assert loop.forward_batch(config["activations"]["batch_size"], torch.device("cpu"), HEADS, MAX_LENGTH) == 1
    assert loop.forward_batch(3, torch.device("cuda"), HEADS, MAX_LENGTH) == 3  # no chunking on GPUs
    out = run_dump(tmp_path, model_dir, config, dumped[0]["summary"].parent / "test.parquet")
    assert_same_dump(dumped[0], out, label="one per pass")


def test_duckdb_sql_on_the_dump(dumped):
    """Cone index per (layer, stage), pooled over sequences, in SQL, equals the numpy computation."""
    outputs, _ = dumped
    path = str(outputs["summary"])
    sql = f"""
        WITH dims AS (
            SELECT layer, stage, unnest(sum_unit) AS u, generate_subscripts(sum_unit, 1) AS d FROM '{path}'),
        pooled AS (SELECT layer, stage, d, sum(u) AS s FROM dims GROUP BY layer, stage, d),
        counts AS (SELECT layer, stage, sum(n) AS n FROM '{path}' GROUP BY layer, stage)
        SELECT layer, stage, sqrt(sum(s * s)) / any_value(n) AS cone
        FROM pooled JOIN counts USING (layer, stage) GROUP BY layer, stage ORDER BY layer, stage
    """
    result = duckdb.sql(sql).df()
    summary = pq.read_table(outputs["summary"]).to_pandas()
    assert len(result) == LAYERS * len(STAGES)
    for _, row in result.iterrows():
        part = summary[(summary.layer == row["layer"]) & (summary.stage == row["stage"])]
        expected = np.linalg.norm(np.stack(part["sum_unit"].to_numpy()).sum(0)) / part["n"].sum()
        assert abs(row["cone"] - expected) < 1e-5
    heads = duckdb.sql(f"SELECT count(*) FROM '{outputs['attention_summary']}' WHERE entropy BETWEEN 0 AND 1").fetchall()[0][0]
    assert heads == N_SEQS * LAYERS * HEADS
    # the token vectors, x = center + scale * delta, as docs/outputs.md writes the query
    vectors = duckdb.sql(f"""
        WITH t AS (SELECT seq_id, position, delta, first_value(center) OVER w AS c, first_value(scale) OVER w AS s
                   FROM '{outputs["tokens"]}' WHERE layer = 1 AND stage = 'output'
                   WINDOW w AS (PARTITION BY seq_id ORDER BY position))
        SELECT seq_id, position, list_transform(delta, lambda d, i: c[i] + s * d) AS x FROM t ORDER BY seq_id, position
    """).df()
    expected = dict(token_vectors.TokenFile(outputs["tokens"]).sequences(1, "output"))
    assert len(vectors) == sum(len(x) for x in expected.values())
    for seq, rows in vectors.groupby("seq_id"):
        np.testing.assert_allclose(np.stack(rows["x"].to_numpy()), expected[seq], rtol=1e-6, atol=1e-6)


# --- bad input --------------------------------------------------------------------------------


def test_bad_inputs_raise_and_leave_no_output(tmp_path, model_dir, config):
    tokens = make_tokens(tmp_path / "test.parquet", config["classes"])
    outputs = {name: tmp_path / "out" / f"{name}.parquet" for name in act.OUTPUT_FILES}
    (tmp_path / "weightless").mkdir()
    (tmp_path / "weightless" / "config.json").write_text((model_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"weightless: not a trained model directory \(missing model.safetensors\)"):
        act.dump(tmp_path / "weightless", {"test": tmp_path / "test.parquet"}, outputs, config["classes"], config["activations"], config["patterns"]["top_keys"])
    # n_tokens out of range in the last record: found before any file is written
    n = tokens.column("n_tokens").to_numpy().copy()
    n[-1] = MAX_LENGTH + 1
    bad = tokens.set_column(tokens.schema.get_field_index("n_tokens"), "n_tokens", pa.array(n, pa.int32()))
    io.write_parquet(bad, tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad.parquet: record synthetic-\S+: n_tokens=65"):
        act.dump(model_dir, {"test": tmp_path / "bad.parquet"}, outputs, config["classes"], config["activations"], config["patterns"]["top_keys"])
    other = copy.deepcopy(config)
    other["classes"] = list(reversed(config["classes"]))
    with pytest.raises(ValueError, match="id2label"):
        act.dump(model_dir, {"test": tmp_path / "test.parquet"}, outputs, other["classes"], other["activations"], other["patterns"]["top_keys"])
    # A failure in the middle of the forward passes (an unknown token id) leaves no file either.
    ids = io.to_matrix(tokens.column("input_ids")).copy()
    ids[-1, 1] = VOCAB + 100
    broken = tokens.set_column(tokens.schema.get_field_index("input_ids"), "input_ids", io.fixed_size_list(ids, pa.int32()))
    io.write_parquet(broken, tmp_path / "broken.parquet")
    with pytest.raises(IndexError):
        act.dump(model_dir, {"test": tmp_path / "broken.parquet"}, outputs, config["classes"], config["activations"], config["patterns"]["top_keys"])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_snakemake_rule_dumps_from_a_saved_model(tmp_path, root, model_dir):
    """rule dump_activations on the tiny config, with the model and tokens files already in place."""
    import shutil

    shutil.copytree(model_dir, tmp_path / "results" / "models" / "seed0")
    make_tokens(tmp_path / "results" / "tokens" / "test.parquet", yaml.safe_load((root / "config" / "tiny.yaml").read_text())["classes"])
    (tmp_path / "overrides.yaml").write_text("activations: {batch_size: 4, device: cpu}\n")
    target = "results/activations/seed0/finetuned/summary.parquet"
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "-d", str(tmp_path), "--cores", "1",
        "--configfile", str(root / "config" / "tiny.yaml"), str(tmp_path / "overrides.yaml"),
        "--allowed-rules", "dump_activations", "--", target,
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in act.OUTPUT_FILES:
        assert (tmp_path / "results" / "activations" / "seed0" / "finetuned" / f"{name}.parquet").is_file()
    assert "dumped 20 sequences" in (tmp_path / "logs" / "dump_activations" / "seed0" / "finetuned.log").read_text()
    assert (tmp_path / "results" / "benchmarks" / "dump_activations" / "seed0" / "finetuned.tsv").is_file()
