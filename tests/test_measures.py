"""bertgeom.measures: known answers, and the dump's path (float32 batches padded to max_length)
agreeing with the statistics' path (one stored matrix at a time, float64) on the same matrices."""

import math

import numpy as np
import pytest
import torch

from bertgeom import measures
from bertgeom.measures import attention_measure_names, attention_measures, band_mass, real_mask, row_k90, vector_stats
from bertgeom.stats.attention import matrix_metrics

torch.set_num_threads(1)


def measured(attn, n, top_keys=5, window=None):
    """attention_measures as {name: [batch, head] numpy}."""
    values = attention_measures(attn, n, top_keys, window)
    return {name: values[..., i].numpy() for i, name in enumerate(attention_measure_names(top_keys, window))}


def padded_batch(rng, lengths, heads=3, length=40):
    """Random softmax attention [batch, head, query, key], PAD keys masked as BERT does; PAD rows
    attend to the real keys (as BERT's do)."""
    logits = torch.from_numpy(rng.normal(size=(len(lengths), heads, length, length)) * 2)
    n = torch.tensor(lengths)
    keys = real_mask(n, length)[:, None, None, :]
    return torch.softmax(logits.masked_fill(~keys, -math.inf), dim=-1).float(), n


# --- known answers ----------------------------------------------------------------------------


def test_k90_one_hot_uniform_and_exact_cases():
    for n in (3, 10, 100, 427):  # 0.9 n is integral for 10, 100: exactly 0.9 n keys, not one more
        assert row_k90(torch.eye(n, dtype=torch.float64)).tolist() == [1] * n
        assert row_k90(torch.full((4, n), 1 / n, dtype=torch.float64)).tolist() == [math.ceil(0.9 * n)] * 4
    row = torch.tensor([[0.05, 0.5, 0.3, 0.15]], dtype=torch.float64)  # 0.5 + 0.3 = 0.8, + 0.15 = 0.95
    assert row_k90(row).tolist() == [3]
    assert row_k90(row.float()).tolist() == [3]
    assert row_k90(row, mass=0.8).tolist() == [2]


def test_row_entropy_bounds():
    n = torch.tensor([50])
    uniform = torch.full((1, 1, 50, 50), 1 / 50, dtype=torch.float64)
    assert measured(uniform, n)["entropy"][0, 0] == pytest.approx(1)
    assert measured(torch.eye(50, dtype=torch.float64)[None, None], n)["entropy"][0, 0] == pytest.approx(0)
    half = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    half[..., :32] = 1 / 32
    assert measured(half, torch.tensor([64]))["entropy"][0, 0] == pytest.approx(math.log(32) / math.log(64))


def test_band_mass_matches_loop():
    a = np.random.default_rng(1).random((9, 9))
    for offsets in (range(-3, 0), range(1, 3), range(0, 1)):
        loop = [sum(a[i, i + d] for d in offsets if 0 <= i + d < 9) for i in range(9)]
        np.testing.assert_allclose(band_mass(torch.from_numpy(a), offsets).numpy(), loop)


def test_attention_measures_known_answers():
    n = torch.tensor([6, 4])
    length = 8
    real = real_mask(n, length)
    eye = torch.eye(length).expand(2, length, length)
    uniform = real[:, None, :].float().expand(2, length, length) / n[:, None, None]
    prev = torch.zeros(2, length, length)
    prev[:, 0, 0] = 1  # [CLS] has no previous token: it attends to itself
    prev[:, torch.arange(1, length), torch.arange(length - 1)] = 1
    # One head each: self (instance), uniform (open), previous token (backward).
    attn = torch.stack([eye, uniform, prev], dim=1)  # [batch, head, query, key]
    attn = attn * real[:, None, None, :]  # PAD keys get no mass, as in BERT
    attn[:, :, :, :] = attn / attn.sum(-1, keepdim=True).clamp_min(1e-30)
    get = {k: torch.from_numpy(v) for k, v in measured(attn, n, window=2).items()}
    nf = n.float()
    torch.testing.assert_close(get["mass_self"][:, 0], torch.ones(2))
    torch.testing.assert_close(get["entropy"][:, 0], torch.zeros(2))
    torch.testing.assert_close(get["k90"][:, 0], torch.ones(2))
    torch.testing.assert_close(get["attn_cone"][:, 0], nf.sqrt() / nf)  # orthogonal rows
    torch.testing.assert_close(get["entropy"][:, 1], torch.ones(2))  # uniform rows: H = log n
    torch.testing.assert_close(get["k90"][:, 1], torch.ceil(0.9 * nf))
    torch.testing.assert_close(get["mass_cls"][:, 1], 1 / nf)
    torch.testing.assert_close(get["mass_sep"][:, 1], 1 / nf)
    torch.testing.assert_close(get["attn_cone"][:, 1], torch.ones(2))  # identical rows
    torch.testing.assert_close(get["col_top5"][:, 1], torch.minimum(nf - 2, torch.tensor(5.0)) / nf)
    torch.testing.assert_close(get["mass_prev"][:, 2], (nf - 1) / nf)  # row 0 has no previous key
    torch.testing.assert_close(get["mass_back"][:, 2], (nf - 1) / nf)  # the window holds the previous key
    torch.testing.assert_close(get["mass_next"][:, 2], torch.zeros(2))
    torch.testing.assert_close(get["k90_q50"][:, 2], torch.ones(2))
    # Reference-compatible: all 8 rows; PAD rows of the identity head are unit vectors e_q too,
    # but masked to zero here, so they add nothing; the uniform head's 8 rows are identical.
    torch.testing.assert_close(get["attn_cone_ref"][:, 1], torch.full((2,), 8.0))


def test_top_keys_names_the_column_share():
    rng = np.random.default_rng(2)
    attn, n = padded_batch(rng, [30, 17])
    three, five = measured(attn, n, top_keys=3), measured(attn, n, top_keys=5)
    assert "col_top3" in three and "col_top5" not in three
    assert (three["col_top3"] < five["col_top5"]).all()
    assert attention_measure_names(5) == tuple(measured(attn, n))


def test_measures_keep_float64():
    rng = np.random.default_rng(3)
    attn, n = padded_batch(rng, [12])
    assert attention_measures(attn.double(), n, 5).dtype == torch.float64
    assert attention_measures(attn.half(), n, 5).dtype == torch.float32
    assert vector_stats(torch.ones(1, 3, 2, dtype=torch.float64), torch.ones(1, 3, dtype=torch.bool))["sum_unit"].dtype == torch.float64


# --- the two paths ----------------------------------------------------------------------------


def test_dump_and_statistics_paths_agree_on_the_same_matrices():
    """The dump's call (a float32 batch of sequences of different lengths, padded to max_length, PAD
    rows included) and the statistics' (each real n x n matrix alone, from numpy, in float64) give
    the same numbers for every measure of attention_summary."""
    rng = np.random.default_rng(4)
    lengths = [40, 23, 9, 31]
    attn, n = padded_batch(rng, lengths)
    dump = measured(attn, n, top_keys=4)
    for b, m in enumerate(lengths):
        for h in range(attn.shape[1]):
            a = attn[b, h, :m, :m].numpy().astype(np.float64)
            stats = matrix_metrics(a, window=2, top_keys=4, min_block=4, n_singular=2, rank_tol=1e-3)
            for name in attention_measure_names(4):
                if name in ("attn_cone", "attn_cone_ref"):  # the dump's alone (PAD rows in the reference)
                    continue
                assert dump[name][b, h] == pytest.approx(stats[name], rel=1e-5, abs=1e-6), (b, h, name)
            # K90 counts keys: the same integers per row on both paths
            assert row_k90(torch.from_numpy(a)).tolist() == row_k90(attn[b, h, :m, :m]).tolist()


def test_vector_stats_exclude_pad_and_match_numpy():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, 4, generator=gen)
    n = torch.tensor([10, 5, 2])
    real = real_mask(n, 10)
    stats = vector_stats(x, real)
    changed = torch.where(real[..., None], x, torch.randn(3, 10, 4, generator=gen) * 100)
    again = vector_stats(changed, real)
    for name in ("sum_unit", "mean_vec", "sum_sq_norm"):
        torch.testing.assert_close(stats[name], again[name])
    assert not torch.allclose(stats["cone_ref"][1:], again["cone_ref"][1:])  # PAD rows are in cone_ref
    for b, m in enumerate(n.tolist()):
        v = x[b, :m].numpy().astype(np.float64)
        np.testing.assert_allclose(stats["sum_unit"][b], (v / np.linalg.norm(v, axis=1, keepdims=True)).sum(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats["mean_vec"][b], v.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats["sum_sq_norm"][b], (v**2).sum(), rtol=1e-6)
    # Per-head groups: [batch, seq, head, width] -> [batch, head, width], each head normalised alone.
    heads = vector_stats(x.view(3, 10, 2, 2), real)
    torch.testing.assert_close(heads["sum_unit"][:, 1], vector_stats(x[..., 2:], real)["sum_unit"])


def test_k90_tolerance_is_below_float32_resolution():
    """The K90 tolerance changes no float32 bound: the dump's float32 counts are those without it."""
    total = torch.rand(1000) + 0.5
    with_tol = ((1 - measures.K90_MASS) + measures.K90_MASS * measures.K90_TOL) * total
    without = (1 - measures.K90_MASS) * total
    assert torch.equal(with_tol, without)
