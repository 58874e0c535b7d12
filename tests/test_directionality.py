"""Directionality: the index, eigenvalues, principal angles, and agreement of the per-head bilinear
form with transformers' own BertSelfAttention scores; the per-seed table from a saved tiny BERT."""


import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from scipy.linalg import orth
from transformers import BertConfig, BertForSequenceClassification
from transformers.models.bert.modeling_bert import BertSelfAttention

from bertgeom.io import read_metadata, write_parquet
from tokenfile import write_tokens
from bertgeom.stats import directionality as dirn

torch.set_num_threads(1)
HIDDEN, HEADS = 32, 4


def tiny_config(**extra) -> BertConfig:
    config = BertConfig(
        vocab_size=40, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=48,
        max_position_embeddings=64, num_labels=2, **extra,
    )  # fmt: skip
    config._attn_implementation = "eager"
    return config


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn at random, biases included (the default init zeroes the biases)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return module.eval()


def weights_of(attn: BertSelfAttention) -> dict[str, np.ndarray]:
    get = lambda t: t.detach().double().numpy()  # noqa: E731
    return {
        "wq": get(attn.query.weight),
        "bq": get(attn.query.bias),
        "wk": get(attn.key.weight),
        "bk": get(attn.key.bias),
    }


def test_directionality_index_symmetric_skew_random():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 20))
    assert dirn.directionality_index(a + a.T) == pytest.approx(0, abs=1e-12)
    assert dirn.directionality_index(a - a.T) == pytest.approx(1)
    hidden, d = 256, 32
    values = [
        dirn.directionality_index(rng.normal(size=(hidden, d)) @ rng.normal(size=(hidden, d)).T) for _ in range(5)
    ]
    assert np.mean(values) == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="zero"):
        dirn.directionality_index(np.zeros((3, 3)))


def test_symmetric_eigenvalues_low_rank_equals_full():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    full = np.linalg.eigvalsh((a @ b.T + b @ a.T) / 2)
    core = dirn.symmetric_eigenvalues(a, b)
    assert np.allclose(np.sort(core), np.sort(full[np.argsort(np.abs(full))[-8:]]))
    signs = dirn.eigen_signs(full, tol=1e-9)
    assert signs["eig_pos"] + signs["eig_neg"] == 8  # rank of S is 2d here
    assert dirn.eigen_signs(np.array([3.0, 1.0, -1.0, 1e-12]), 1e-9) == pytest.approx(
        {"eig_pos": 2, "eig_neg": 1, "eig_pos_mass": 0.8}
    )


def test_principal_angles():
    rng = np.random.default_rng(2)
    basis = rng.normal(size=(10, 3))
    mixed = basis @ rng.normal(size=(3, 3))  # another basis of the same subspace
    assert np.allclose(dirn.principal_angles(basis, basis), 0, atol=1e-7)
    assert np.allclose(dirn.principal_angles(basis, mixed), 0, atol=1e-7)
    assert dirn.subspace_overlap(orth(basis), orth(mixed)) == pytest.approx(1)
    e = np.eye(10)
    assert np.allclose(dirn.principal_angles(e[:, :2], e[:, 2:4]), np.pi / 2)
    assert dirn.subspace_overlap(e[:, :2], e[:, 2:4]) == 0
    tilted = np.stack([e[0], np.cos(0.3) * e[1] + np.sin(0.3) * e[2]], axis=1)
    assert np.allclose(dirn.principal_angles(e[:, :2], tilted), [0, 0.3])


def test_bilinear_form_reproduces_self_attention_scores():
    """Without biases M alone reproduces q.k/sqrt(d); with biases the decomposition does, and the
    attention of transformers' eager forward is softmax over keys of x_i M x_j + x_j.u_key."""
    attn = randomised(BertSelfAttention(tiny_config()))
    x = torch.randn(1, 9, HIDDEN, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _, probs = attn(x)
        q = attn.query(x).view(1, 9, HEADS, -1).transpose(1, 2)
        k = attn.key(x).view(1, 9, HEADS, -1).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2) * attn.scaling)[0].double().numpy()  # [heads, query, key]
    w, xs = weights_of(attn), x[0].double().numpy()
    for head in range(HEADS):
        m, u_query, u_key, const = dirn.qk_bilinear(w, head, HEADS)
        full = xs @ m @ xs.T + (xs @ u_query)[:, None] + (xs @ u_key)[None, :] + const
        assert np.allclose(full, scores[head], atol=1e-4)
        logits = xs @ m @ xs.T + (xs @ u_key)[None, :]  # the row-constant terms cancel in softmax
        softmax = np.exp(logits - logits.max(1, keepdims=True))
        assert np.allclose(softmax / softmax.sum(1, keepdims=True), probs[0, head].double().numpy(), atol=1e-5)
        assert np.allclose(dirn.head_scores(xs, w, HEADS, dirn.OURS)[head], scores[head], atol=1e-4)
    with torch.no_grad():
        attn.query.bias.zero_()
        attn.key.bias.zero_()
        q = attn.query(x).view(1, 9, HEADS, -1).transpose(1, 2)
        k = attn.key(x).view(1, 9, HEADS, -1).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2) * attn.scaling)[0].double().numpy()
    w = weights_of(attn)
    for head in range(HEADS):
        m, u_query, u_key, const = dirn.qk_bilinear(w, head, HEADS)
        assert np.allclose(xs @ m @ xs.T, scores[head], atol=1e-4)
        assert not u_query.any() and not u_key.any() and const == 0


def test_original_code_variant_slices_columns():
    w = weights_of(randomised(BertSelfAttention(tiny_config()), seed=3))
    d = HIDDEN // HEADS
    m = dirn.qk_bilinear_original(w, 1, HEADS)
    assert np.allclose(m, w["wq"][:, d : 2 * d] @ w["wk"][:, d : 2 * d].T / np.sqrt(d))
    assert not np.allclose(m, dirn.qk_bilinear(w, 1, HEADS)[0])
    x = np.random.default_rng(0).normal(size=(5, HIDDEN))
    assert np.allclose(dirn.head_scores(x, w, HEADS, dirn.ORIGINAL)[1], x @ m @ x.T)


def saved_model(tmp_path):
    model = randomised(BertForSequenceClassification(tiny_config()), seed=4)
    model.save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


def test_load_weights_and_ov_basis(tmp_path):
    model, model_dir = saved_model(tmp_path)
    layers, n_heads = dirn.load_attention_weights(model_dir)
    assert n_heads == HEADS and len(layers) == 2
    attention = model.bert.encoder.layer[1].attention
    assert np.allclose(layers[1]["wk"], attention.self.key.weight.detach().numpy())
    assert np.allclose(layers[1]["bo"], attention.output.dense.bias.detach().numpy())
    d = HIDDEN // HEADS
    w = layers[1]
    basis = dirn.ov_basis(w, 2, HEADS)
    ov = w["wo"][:, 2 * d : 3 * d] @ w["wv"][2 * d : 3 * d]
    assert basis.shape == (HIDDEN, d)
    assert np.allclose(basis @ basis.T @ ov, ov)  # the basis spans W_O^h W_V^h's column space
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        dirn.load_attention_weights(tmp_path)


def write_activations(model, tmp_path, seqs=2):
    """tokens.parquet (stage input, plus a stage to be ignored) and attention.parquet of the subset."""
    token_blocks, attention_rows = [], []
    for s in range(seqs):
        n = 12 - s
        ids = torch.randint(5, 40, (1, n), generator=torch.Generator().manual_seed(s))
        with torch.no_grad():
            out = model.bert(ids, output_hidden_states=True, output_attentions=True)
        for layer in range(2):
            for stage in ("input", "output"):
                x = out.hidden_states[layer + (stage == "output")][0].numpy()
                token_blocks.append({"seq_id": f"s{s}", "label": s, "layer": layer, "stage": stage, "x": x})
            for head in range(HEADS):
                a = out.attentions[layer][0, head].numpy()
                attention_rows.append({"seq_id": f"s{s}", "label": s, "layer": layer, "head": head, "n": n,
                                       "matrix": a.astype(np.float16).reshape(-1)})  # fmt: skip
    write_tokens(tmp_path / "tokens.parquet", token_blocks)
    frame = pd.DataFrame(attention_rows).astype({"label": "int16", "layer": "int16", "head": "int16", "n": "int32"})
    schema = pa.schema([("seq_id", pa.string()), ("label", pa.int16()), ("layer", pa.int16()), ("head", pa.int16()),
                        ("n", pa.int32()), ("matrix", pa.list_(pa.float16()))])  # fmt: skip
    write_parquet(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), tmp_path / "attention.parquet")


def test_directionality_table_and_run(tmp_path, root):
    model, model_dir = saved_model(tmp_path)
    write_activations(model, tmp_path)
    out = tmp_path / "stats" / "directionality.parquet"
    dirn.write_directionality(
        str(model_dir), str(tmp_path / "tokens.parquet"), str(tmp_path / "attention.parquet"), str(out), 1e-6, seed=5
    )
    table = pd.read_parquet(out)
    assert read_metadata(out)["model_sha256"]
    assert list(table.columns) == ["seed", "layer", "head", "variant", "measure", "value"]
    assert not table.duplicated(["seed", "layer", "head", "variant", "measure"]).any()
    assert set(table["seed"]) == {5} and set(table["variant"]) == {"ours", "original_code"}
    value = table.set_index(["layer", "head", "variant", "measure"])["value"]
    assert len(value.xs("directionality_index", level="measure")) == 2 * HEADS * 2
    assert value.xs(("ours", "n_seqs"), level=("variant", "measure")).eq(2).all()
    assert "ov_overlap_mean" not in value.xs("original_code", level="variant").index.get_level_values("measure")
    # the weights-based index of layer 0 head 1, recomputed from the model by hand
    w = model.bert.encoder.layer[0].attention.self
    d = HIDDEN // HEADS
    m = (w.query.weight[d : 2 * d].T @ w.key.weight[d : 2 * d]).detach().double().numpy()
    skew = (m - m.T) / 2
    assert value[(0, 1, "ours", "directionality_index")] == pytest.approx((skew**2).sum() / (m**2).sum())
    # data-based: the asymmetry of the model's own attention, mean over the two sequences
    with torch.no_grad():
        attentions = [model.bert(torch.randint(5, 40, (1, 12 - s), generator=torch.Generator().manual_seed(s)),
                                 output_attentions=True).attentions[1][0, 3].double().numpy() for s in range(2)]  # fmt: skip
    expected = np.mean([dirn.directionality_index(a.astype(np.float16).astype(np.float64)) for a in attentions])
    assert value[(1, 3, "ours", "attn_asymmetry")] == pytest.approx(expected)
    assert 0 <= value[(1, 3, "original_code", "qk_asymmetry")] <= 1
    # Q K^T on the stored layer inputs (float32 mean + float16 deviations) ~ on the exact inputs
    layers, _ = dirn.load_attention_weights(model_dir)
    with torch.no_grad():
        inputs = [model.bert(torch.randint(5, 40, (1, 12 - s), generator=torch.Generator().manual_seed(s)),
                             output_hidden_states=True).hidden_states[1][0].double().numpy() for s in range(2)]  # fmt: skip
    exact = np.mean([dirn.directionality_index(dirn.head_scores(x, layers[1], HEADS, "ours")[2]) for x in inputs])
    assert value[(1, 2, "ours", "qk_asymmetry")] == pytest.approx(exact, rel=1e-3)
