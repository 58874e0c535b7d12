"""Cone index and the anisotropy measures: analytic cases, invariances, the streamed per-seed table."""


import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from IsoScore.IsoScore import IsoScore as isoscore_package

from bertgeom.io import fixed_size_list, read_metadata, write_parquet
from bertgeom.token_vectors import TokenFile
from bertgeom.stats import cone
from bertgeom.stats.cone import (
    Moments,
    cone_from_sums,
    cone_index,
    isoscore,
    isoscore_from_cov,
    mean_cosine_from_cone,
    mean_pairwise_cosine,
    normalised_cone,
    outlier_z,
    top_pc_share_from_cov,
)
from bertgeom.measures import vector_stats
from tokenfile import write_tokens

torch.set_num_threads(1)

CLASSES = ["A", "B", "C"]
STAGES = ["input", "q", "context", "output"]
HEADS, D_HEAD, LAYERS, MAX_LEN = 2, 4, 2, 14
HIDDEN = HEADS * D_HEAD


def sequence_sums(hidden, mask):
    """The dump's per-sequence sums (bertgeom.measures.vector_stats) of float64 arrays, as numpy:
    hidden [batch, seq, d], mask [batch or 1, seq] -> n, sum_unit, mean_vec, sum_sq_norm, cone_ref."""
    hidden = torch.from_numpy(np.asarray(hidden, dtype=np.float64))
    real = torch.from_numpy(np.asarray(mask, dtype=bool)).expand(hidden.shape[:2])
    return {"n": real.sum(1).numpy(), **{k: v.numpy() for k, v in vector_stats(hidden, real).items()}}


def random_rotation(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# ---------------------------------------------------------------------------------------------
# Analytic cases
# ---------------------------------------------------------------------------------------------


def test_identical_directions_give_c_one():
    direction = np.array([0.3, -1.0, 2.0, 0.5])
    vectors = direction * np.array([[1.0], [2.0], [0.1], [7.0], [3.0]])  # same direction, any length
    assert normalised_cone(vectors) == pytest.approx(1.0)
    assert cone_index(vectors) == pytest.approx(5.0)
    assert mean_cosine_from_cone(cone_index(vectors), 5) == pytest.approx(1.0)


def test_antipodal_pairs_give_zero():
    rng = np.random.default_rng(0)
    half = rng.normal(size=(20, 16))
    vectors = np.vstack([half, -3.0 * half])  # each vector's opposite, at another length
    assert cone_index(vectors) == pytest.approx(0.0, abs=1e-12)
    assert mean_pairwise_cosine(vectors) == pytest.approx(-1 / 39)  # (0 - n) / (n (n - 1))


def test_gaussian_vectors_give_c_near_one_over_sqrt_n():
    # Independent isotropic directions: E[I^2] = n exactly, so E[c^2] = 1/n.
    rng = np.random.default_rng(1)
    n = 300
    c = normalised_cone(rng.normal(size=(200, n, 32)))  # 200 independent clouds -> [200]
    assert np.mean(c**2) * n == pytest.approx(1.0, abs=0.1)
    assert np.median(c) * np.sqrt(n) == pytest.approx(1.0, abs=0.15)


def test_mean_cosine_identity_matches_pairwise_computation():
    rng = np.random.default_rng(2)
    vectors = rng.normal(loc=0.7, size=(37, 6))
    direct = mean_pairwise_cosine(vectors, chunk=5)  # chunks exercise the diagonal bookkeeping
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    brute = np.mean([units[i] @ units[j] for i in range(37) for j in range(37) if i != j])
    assert direct == pytest.approx(brute, rel=1e-12)
    assert mean_cosine_from_cone(cone_index(vectors), 37) == pytest.approx(direct, rel=1e-12)


def test_every_measure_is_rotation_invariant_except_outlier_dims():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(120, 10)) * np.linspace(0.2, 3.0, 10) + 1.5
    vectors[:, 4] += 25.0  # an outlier dimension
    rotated = vectors @ random_rotation(10, rng)
    for measure in (cone_index, normalised_cone, mean_pairwise_cosine, isoscore):
        assert measure(rotated) == pytest.approx(measure(vectors), rel=1e-9)
    a, b = Moments.of_vectors(vectors, 1), Moments.of_vectors(rotated, 1)
    assert a.cone_measures() == pytest.approx(b.cone_measures(), rel=1e-9)
    assert top_pc_share_from_cov(a.cov()) == pytest.approx(top_pc_share_from_cov(b.cov()), rel=1e-9)
    # Outlier dimensions name coordinates: found in the model's basis, not in a rotated one.
    assert np.flatnonzero(np.abs(outlier_z(vectors.mean(axis=0))) > 2.5).tolist() == [4]
    assert np.flatnonzero(np.abs(outlier_z(rotated.mean(axis=0))) > 2.5).tolist() != [4]


def test_pad_rows_change_the_reference_variant_but_not_ours():
    rng = np.random.default_rng(4)
    hidden = rng.normal(size=(3, MAX_LEN, 6))
    n = np.array([5, 9, MAX_LEN])
    mask = np.arange(MAX_LEN)[None, :] < n[:, None]
    other = hidden.copy()
    other[~mask] = rng.normal(loc=4.0, size=(int((~mask).sum()), 6))  # new PAD rows only
    ours, ours_other = (sequence_sums(h, mask) for h in (hidden, other))
    for name in ("n", "sum_unit", "mean_vec", "sum_sq_norm"):
        np.testing.assert_allclose(ours[name], ours_other[name])
    for b in range(3):
        assert cone_from_sums(ours["sum_unit"][b], ours["n"][b]) == pytest.approx(normalised_cone(hidden[b, : n[b]]))
        assert ours["sum_sq_norm"][b] == pytest.approx((hidden[b, : n[b]] ** 2).sum())
    ref, ref_other = ours["cone_ref"], ours_other["cone_ref"]
    np.testing.assert_allclose(ref, cone_index(hidden))  # every row, PAD included
    assert abs(ref[0] - ref_other[0]) > 0.5 and abs(ref[1] - ref_other[1]) > 0.5
    assert ref[2] == pytest.approx(ref_other[2])  # no PAD row in the full-length sequence


def test_isoscore_agrees_with_the_isoscore_package():
    rng = np.random.default_rng(5)
    for scales in (np.ones(8), np.linspace(0.1, 4.0, 8), np.r_[10.0, np.full(7, 0.01)]):
        points = rng.normal(size=(400, 8)) * scales @ random_rotation(8, rng)
        # the package takes sqrt(d) in float32, hence the tolerance
        assert isoscore(points) == pytest.approx(float(isoscore_package(points)), rel=1e-5, abs=1e-6)
    line = np.outer(rng.normal(size=50), rng.normal(size=8))  # all variance on one line
    assert isoscore(line) == pytest.approx(0.0, abs=1e-9)


def test_moments_merge_like_one_cloud():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(30, 5)), rng.normal(loc=2.0, size=(11, 5))
    merged = Moments.of_vectors(a, 2) + Moments.of_vectors(b, 1)
    whole = np.vstack([a, b])
    np.testing.assert_allclose(merged.cov(), np.cov(whole, rowvar=False), rtol=1e-10)
    assert merged.cone_measures()["cone_normalised"] == pytest.approx(normalised_cone(whole))
    assert merged.cone_measures()["n_seqs"] == 3
    assert merged.cone_measures()["rms_norm"] == pytest.approx(np.sqrt((whole**2).sum(axis=1).mean()))


# ---------------------------------------------------------------------------------------------
# The per-seed table from synthetic activation files (docs/outputs.md, activations)
# ---------------------------------------------------------------------------------------------


def make_activations(rng, n_per_class=4, rotate=None):
    """Synthetic activations: hidden[(seq, layer, stage)] [MAX_LEN, HIDDEN] with PAD rows, and A."""
    seqs = []
    for label in range(len(CLASSES)):
        for i in range(n_per_class):
            n = int(rng.integers(5, MAX_LEN - 1))
            hidden = {}
            for layer in range(LAYERS):
                for s, stage in enumerate(STAGES):
                    x = rng.normal(size=(MAX_LEN, HIDDEN)) + (label + 1) * 0.7 * np.eye(HIDDEN)[(layer + s + label) % HIDDEN]
                    hidden[layer, stage] = x if rotate is None else x @ rotate
            logits = rng.normal(size=(LAYERS, HEADS, MAX_LEN, MAX_LEN)) * 2
            logits[..., n:] = -np.inf  # real keys only
            attn = np.exp(logits - logits.max(-1, keepdims=True))
            attn /= attn.sum(-1, keepdims=True)
            seqs.append({"seq_id": f"s-{label}-{i}", "label": label, "n": n, "hidden": hidden, "attn": attn})
    return seqs


def write_activations(directory, seqs, subset_per_class=2):
    """summary, heads, attention_summary and tokens Parquet files with the contract's columns."""
    summary, heads, attention, tokens = ([] for _ in range(4))
    ident = lambda seq, layer: {  # noqa: E731
        "seq_id": seq["seq_id"], "split": "test", "label": seq["label"], "pred": seq["label"],
        "correct": True, "layer": layer,
    }  # fmt: skip
    seen = {}
    for seq in seqs:
        n, mask = seq["n"], (np.arange(MAX_LEN) < seq["n"])[None, :]
        in_subset = seen.setdefault(seq["label"], 0) < subset_per_class
        seen[seq["label"]] += 1
        for (layer, stage), x in seq["hidden"].items():
            sums = sequence_sums(x[None], mask)
            summary.append({**ident(seq, layer), "stage": stage, "n": n, "sum_unit": sums["sum_unit"][0],
                            "mean_vec": sums["mean_vec"][0], "sum_sq_norm": sums["sum_sq_norm"][0],
                            "cls_vec": x[0], "cone_ref": sums["cone_ref"][0]})  # fmt: skip
            if stage in ("q", "context"):
                for head in range(HEADS):
                    part = x[None, :, head * D_HEAD : (head + 1) * D_HEAD]
                    hs = sequence_sums(part, mask)
                    heads.append({**ident(seq, layer), "head": head, "stage": {"q": "q", "context": "z"}[stage],
                                  "n": n, "sum_unit": hs["sum_unit"][0], "mean_vec": hs["mean_vec"][0],
                                  "sum_sq_norm": hs["sum_sq_norm"][0], "cone_ref": hs["cone_ref"][0]})  # fmt: skip
            if in_subset:
                tokens.append({"seq_id": seq["seq_id"], "label": seq["label"], "layer": layer, "stage": stage, "x": x[:n]})
        for layer in range(LAYERS):
            for head in range(HEADS):
                rows = seq["attn"][layer, head]
                attention.append({**ident(seq, layer), "head": head, "n": n, "attn_cone": normalised_cone(rows[:n]),
                                  "attn_cone_ref": cone_index(rows)})  # fmt: skip
    paths = {}
    for name, rows, vectors in (
        ("summary", summary, {"sum_unit": pa.float32(), "mean_vec": pa.float32(), "cls_vec": pa.float16()}),
        ("heads", heads, {"sum_unit": pa.float32(), "mean_vec": pa.float32()}),
        ("attention_summary", attention, {}),
    ):
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        table = {}
        for key, values in columns.items():
            if key in vectors:
                table[key] = fixed_size_list(np.stack(values).astype(vectors[key].to_pandas_dtype()), vectors[key])
            elif key in ("label", "pred", "layer", "head"):
                table[key] = pa.array(values, pa.int16())
            elif key in ("n", "position"):
                table[key] = pa.array(values, pa.int32())
            elif key in ("cone_ref", "attn_cone", "attn_cone_ref"):
                table[key] = pa.array(values, pa.float32())
            else:
                table[key] = pa.array(values)
        paths[name] = str(directory / f"{name}.parquet")
        write_parquet(pa.table(table), paths[name], meta={"model_sha256": "abc"})
    paths["tokens"] = str(directory / "tokens.parquet")
    write_tokens(paths["tokens"], sorted(tokens, key=lambda b: (b["layer"], STAGES.index(b["stage"]))))
    return paths


def table_of(paths, batch_rows=5):
    return cone.cone_table(paths["summary"], paths["heads"], paths["attention_summary"], paths["tokens"],
                           CLASSES, seed=7, batch_rows=batch_rows)  # fmt: skip


def value(table, **where):
    rows = table
    for key, wanted in where.items():
        rows = rows[rows[key] == wanted]
    assert len(rows) == 1, where
    return rows["value"].iloc[0]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    seqs = make_activations(np.random.default_rng(10))
    paths = write_activations(tmp_path_factory.mktemp("act"), seqs)
    return seqs, paths, table_of(paths)


def test_table_columns_and_identifiers(synthetic):
    _, _, table = synthetic
    assert list(table.columns) == cone.COLUMNS
    assert set(table["scope"]) == {"sequence", "pooled", "subset"}
    assert set(table["class"]) == {*CLASSES, "all"}
    assert set(table["stage"]) == {*STAGES, "z", "attention"}
    assert set(table[table["head"] >= 0]["stage"]) == {"q", "z", "attention"}
    assert set(table[table["variant"] == "reference"]["scope"]) == {"sequence"}
    assert not table.duplicated(cone.COLUMNS[:-1]).any()
    assert (table["seed"] == 7).all()


def test_class_index_from_sufficient_statistics_equals_direct(synthetic):
    seqs, _, table = synthetic
    for name, members in [("all", seqs), *[(c, [s for s in seqs if s["label"] == i]) for i, c in enumerate(CLASSES)]]:
        for layer, stage in [(0, "input"), (1, "output"), (1, "context")]:
            real = np.vstack([s["hidden"][layer, stage][: s["n"]] for s in members])
            where = dict(scope="pooled", **{"class": name}, layer=layer, stage=stage, head=-1)
            assert value(table, measure="cone_normalised", **where) == pytest.approx(normalised_cone(real), rel=1e-5)
            assert value(table, measure="n", **where) == len(real)
            assert value(table, measure="mean_cosine", **where) == pytest.approx(mean_pairwise_cosine(real), rel=1e-4, abs=1e-6)
            per_seq = [normalised_cone(s["hidden"][layer, stage][: s["n"]]) for s in members]
            where["scope"] = "sequence"
            assert value(table, measure="cone_normalised", variant="ours", **where) == pytest.approx(np.mean(per_seq), rel=1e-5)
            assert value(table, measure="cone_normalised_std", variant="ours", **where) == pytest.approx(np.std(per_seq, ddof=1), rel=1e-4)
            refs = [cone_index(s["hidden"][layer, stage]) for s in members]  # every row, PAD included
            assert value(table, measure="cone_index", variant="reference", **where) == pytest.approx(np.mean(refs), rel=1e-5)
    # one head: the head's own column block, normalised within the head
    real = np.vstack([s["hidden"][1, "context"][: s["n"], D_HEAD:] for s in seqs if s["label"] == 2])
    assert value(table, scope="pooled", **{"class": "C"}, layer=1, stage="z", head=1, measure="cone_normalised") == pytest.approx(normalised_cone(real), rel=1e-5)


def test_attention_rows_and_subset_measures(synthetic):
    seqs, paths, table = synthetic
    rows = [s["attn"][1, 0][: s["n"]] for s in seqs if s["label"] == 1]
    where = dict(scope="sequence", **{"class": "B"}, layer=1, stage="attention", head=0)
    assert value(table, variant="ours", measure="cone_normalised", **where) == pytest.approx(np.mean([normalised_cone(r) for r in rows]), rel=1e-5)
    assert value(table, variant="ours", measure="n_seqs", **where) == 4
    # subset: the first 2 sequences per class, token vectors as written (float32 mean + float16 deviations)
    subset = [s for s in seqs if s["seq_id"].endswith(("-0", "-1"))]
    x = np.vstack([x for _, x in TokenFile(paths["tokens"]).sequences(0, "q")])
    exact = np.vstack([s["hidden"][0, "q"][: s["n"]] for s in subset])
    np.testing.assert_allclose(x, exact, atol=4 * 2**-12)  # |x - center| < 4 here
    where = dict(scope="subset", **{"class": "all"}, layer=0, stage="q", variant="ours")
    assert value(table, head=-1, measure="isoscore", **where) == pytest.approx(float(isoscore_package(x)), rel=1e-5)
    assert value(table, head=-1, measure="n_seqs", **where) == len(subset)
    # directions from float32 vectors (cone.cloud_moments)
    assert value(table, head=-1, measure="cone_normalised", **where) == pytest.approx(normalised_cone(x), rel=1e-6)
    head0 = x[:, :D_HEAD]
    assert value(table, head=0, measure="isoscore", **where) == pytest.approx(float(isoscore_package(head0)), rel=1e-5)
    share = top_pc_share_from_cov(np.cov(head0, rowvar=False))
    # the streamed scatter sums float32 products (cone.cloud_moments): ~1e-6 relative to the spread
    assert value(table, head=0, measure="top_pc_share", **where) == pytest.approx(share, rel=1e-5)
    total = np.trace(np.cov(x, rowvar=False))
    assert value(table, head=-1, measure="total_variance", **where) == pytest.approx(total, rel=1e-5)


def test_table_does_not_depend_on_batch_size(synthetic):
    _, paths, table = synthetic
    other = table_of(paths, batch_rows=100_000)
    np.testing.assert_allclose(other["value"].to_numpy(), table["value"].to_numpy(), rtol=1e-9, equal_nan=True)
    assert other.drop(columns="value").equals(table.drop(columns="value"))


def test_rotating_every_vector_leaves_the_table_unchanged(tmp_path, synthetic):
    _, _, table = synthetic
    rng = np.random.default_rng(11)
    # A rotation within each head's block rotates whole vectors and every head's slice alike.
    blocks = np.zeros((HIDDEN, HIDDEN))
    for h in range(HEADS):
        blocks[h * D_HEAD : (h + 1) * D_HEAD, h * D_HEAD : (h + 1) * D_HEAD] = random_rotation(D_HEAD, rng)
    rotated = table_of(write_activations(tmp_path, make_activations(np.random.default_rng(10), rotate=blocks)))
    keep = table["measure"] != "n_outlier_dims"
    exact = keep & (table["scope"] != "subset")  # subset vectors are float16: rounding differs after rotation
    np.testing.assert_allclose(rotated["value"][exact], table["value"][exact], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rotated["value"][keep], table["value"][keep], rtol=2e-2, atol=2e-3)


def test_bad_inputs_raise_clear_errors(tmp_path, synthetic):
    _, paths, _ = synthetic
    broken = str(tmp_path / "summary.parquet")
    write_parquet(pa.table({"seq_id": ["x"], "layer": pa.array([0], pa.int16())}), broken)
    with pytest.raises(ValueError, match=r"summary\.parquet: missing column\(s\) \['split'"):
        cone.cone_table(broken, paths["heads"], paths["attention_summary"], paths["tokens"], CLASSES, 0)
    with pytest.raises(ValueError, match=r"label 2 outside config classes"):
        cone.cone_table(paths["summary"], paths["heads"], paths["attention_summary"], paths["tokens"], CLASSES[:2], 0)


def test_run_writes_the_table_with_provenance(tmp_path, synthetic):
    _, paths, table = synthetic
    out = tmp_path / "stats" / "cone_index.parquet"
    cone.write_cone_index(**paths, out=str(out), classes=CLASSES, seed=7, outlier_sigma=3.0, batch_rows=5)
    meta = read_metadata(out)
    assert meta["seed"] == 7 and meta["model_sha256"] == "abc" and "config_sha256" in meta
    written = pa.parquet.read_table(out).to_pandas()
    np.testing.assert_allclose(written["value"], table["value"], equal_nan=True)
    assert written["head"].dtype == np.int16 and written["layer"].dtype == np.int16


# ---------------------------------------------------------------------------------------------
# Precision where the spread is tiny beside the mean (issue 14, item 5)
# ---------------------------------------------------------------------------------------------


def test_sequence_spread_is_exact_where_the_values_barely_differ():
    # Cone indices ~ 1 - 1e-7 that differ by ~1e-9: sum of squares minus square of sums cancels.
    rng = np.random.default_rng(20)
    c = 1 - 1e-7 + 1e-9 * rng.normal(size=60)
    keys = pd.DataFrame({name: [0] * 60 for name in cone.KEYS})
    parts = []
    for rows in (slice(0, 7), slice(7, 40), slice(40, 60)):  # three batches, merged
        values = {"seqs": np.ones(len(c[rows])), "c": c[rows]}
        parts.append(next(cone.group_sums(keys[rows], values, spreads=("c",)))[1])
    merged = cone.merge_sums(cone.merge_sums(parts[0], parts[1]), parts[2])
    assert cone._spread(merged["c_m2"], merged["seqs"]) == pytest.approx(np.std(c, ddof=1), rel=1e-6)
    one_pass = np.sqrt(max((c**2).sum() - c.sum() ** 2 / 60, 0) / 59)  # the old formula
    assert abs(one_pass / np.std(c, ddof=1) - 1) > 0.01


def collapsed_cloud(d=320, per_seq=40, seqs=3):
    """float32-exact vectors m + 2^-17 (3 a e_0 + b e_1 + c e_2 / 2) with m float32 in [1.25, 1.75)^d and
    a, b, c = +-1 balanced: spread ~1e-6 of the norm. Covariance (2^-34 n / (n - 1)) diag(9, 1, 1/4, 0, ...)."""
    signs = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], dtype=np.float64)
    center = np.random.default_rng(22).uniform(1.25, 1.75, d).astype(np.float32).astype(np.float64)
    blocks = []
    for s in range(seqs):
        x = np.tile(center, (per_seq, 1))
        x[:, :3] += 2.0**-17 * np.array([3, 1, 0.5]) * signs[(np.arange(per_seq) + s) % 8]  # exact in float32
        blocks.append(x.astype(np.float32))
    n = per_seq * seqs
    spectrum = 2.0**-34 * n / (n - 1) * np.r_[9, 1, 0.25, np.zeros(d - 3)]
    return blocks, spectrum


def test_nearly_collapsed_cloud_keeps_its_covariance(tmp_path):
    """Spread 1e-6 of the norm: the dump's encoding and the two-pass scatter give the float64 answer;
    float16 vectors (the old tokens.parquet) round the spread away entirely."""
    blocks, spectrum = collapsed_cloud()
    d = len(spectrum)
    assert 5e-7 < np.sqrt(spectrum.sum()) / np.linalg.norm(blocks[0][0]) < 1.5e-6
    rounded = np.cov(np.vstack(blocks).astype(np.float16).astype(np.float64), rowvar=False)
    assert abs(np.trace(rounded) / spectrum.sum() - 1) > 0.5  # float16 of x: the spread is rounding
    path = tmp_path / "tokens.parquet"
    write_tokens(path, [{"seq_id": f"s{i}", "label": 0, "layer": 0, "stage": "q", "x": x} for i, x in enumerate(blocks)])
    acc = cone.subset_moments(TokenFile(path), 0, "q", 4)
    moments = cone.head_scatters(cone.with_all_classes(acc), 4)
    measures = moments["test", 0, 0, "q", -1].spectrum_measures(3.0)
    cov = np.diag(spectrum)
    assert measures["total_variance"] == pytest.approx(spectrum.sum(), rel=1e-4)
    assert measures["top_pc_share"] == pytest.approx(0.9 / 1.025, rel=1e-4)
    assert measures["isoscore"] == pytest.approx(isoscore_from_cov(cov), rel=1e-3)
    head0 = moments["test", cone.ALL, 0, "q", 0].spectrum_measures(3.0)  # head 0 holds e_0..e_2
    assert head0["top_pc_share"] == pytest.approx(0.9 / 1.025, rel=1e-4)
    assert moments["test", 0, 0, "q", 1].cov() == pytest.approx(np.zeros((80, 80)), abs=1e-16)
    # the scatter merged across sequences and batches equals the direct two-pass covariance
    whole = np.vstack(blocks).astype(np.float64)
    merged = sum((Moments.of_vectors(x) for x in blocks[1:]), Moments.of_vectors(blocks[0]))
    np.testing.assert_allclose(merged.cov(), np.cov(whole, rowvar=False), rtol=1e-9, atol=1e-22)


def test_top_eigenvalue_lanczos_equals_lapack():
    rng = np.random.default_rng(21)
    for scales in (np.ones(300), np.r_[5.0, 3.0, np.linspace(1, 0.1, 298)]):
        cov = np.cov(rng.normal(size=(900, 300)) * scales, rowvar=False)
        assert cone.top_eigenvalue(cov) == pytest.approx(np.linalg.eigvalsh(cov)[-1], rel=1e-10)
    assert cone.top_eigenvalue(np.diag([1.0, 4.0, 2.0])) == pytest.approx(4.0)  # LAPACK below LANCZOS_MIN_DIM
