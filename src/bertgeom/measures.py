"""The measures of attention matrices and token vectors: one definition each, in torch.

Used on both paths: the activation dump (every sequence, float32 tensors on the model's device,
batches padded to max_length) and the statistics (the stored subset's matrices and vectors, numpy
arrays passed as float64 tensors: `torch.from_numpy`). Each function keeps its input's dtype
(float16/bfloat16 are computed in float32). Dimension names as in bertgeom.hooks: batch, head,
seq, query, key, width.

Attention measures of one head's matrix A [query, key] over the n real tokens (positions 0 = [CLS],
n - 1 = [SEP]; PAD rows and keys excluded; each real row sums to 1), means over the real query rows:

    entropy             H(A_q) / log n with H = -sum_k a log a (0 log 0 = 0): 1 uniform, 0 one key
    k90                 fewest keys holding K90_MASS of the row's mass; k90_q10/q50/q90 its quantiles
                        over the rows (linear interpolation)
    mass_cls, mass_sep, mass_self     A[q, 0], A[q, n-1], A[q, q]
    mass_prev, mass_next              A[q, q-1], A[q, q+1] (0 where there is no such real key)
    mass_back, mass_fwd               sum_{1<=d<=window} A[q, q-d] and A[q, q+d] (the contextual windows)
    col_top{k}          share of the head's mass on its k most-attended non-special keys (column sums
                        of the real rows over keys 1..n-2, the k largest summed, / the rows' total mass)
    attn_cone           ||sum_q a_q/||a_q|| || / n, the normalised cone index of the rows as vectors
    attn_cone_ref       ||sum over ALL rows, PAD included, of a_q/||a_q|| || (reference-compatible)
"""

from __future__ import annotations

import numpy as np
import torch

K90_MASS = 0.9  # the mass K90 counts keys for
K90_QUANTILES = (0.1, 0.5, 0.9)
# Relative tolerance of the K90 comparison: a row whose top k keys hold exactly 0.9 of its mass
# needs k keys, not k + 1, although 0.9 n is rounded (below float32's resolution: float64 only).
K90_TOL = 1e-9


def attention_measure_names(top_keys: int, window: int | None = None) -> tuple[str, ...]:
    """The measures of `attention_measures`, in its order (the dump's attention_summary columns)."""
    names = (
        "entropy", "k90", "mass_cls", "mass_sep", "mass_self", "mass_prev", "mass_next",
        "k90_q10", "k90_q50", "k90_q90", f"col_top{top_keys}", "attn_cone", "attn_cone_ref",
    )  # fmt: skip
    return names + (("mass_back", "mass_fwd") if window is not None else ())


def real_mask(n: torch.Tensor, length: int) -> torch.Tensor:
    """[batch, length] bool: position < n (real tokens: [CLS], k-mers, [SEP])."""
    return torch.arange(length, device=n.device)[None, :] < n[:, None]


def _computable(x: torch.Tensor) -> torch.Tensor:
    """float32 and float64 stay as they are; lower precisions are computed in float32."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def sort_rows(a: torch.Tensor) -> torch.Tensor:
    """[..., key] -> a new contiguous tensor with each row sorted ascending."""
    if a.device.type == "cpu":
        # torch's CPU sort also builds int64 indices and is ~25x slower than numpy's SIMD sort.
        return torch.from_numpy(np.sort(a.numpy(), axis=-1))
    return a.sort(dim=-1).values


def keys_for_mass(ordered: torch.Tensor, mass: float = K90_MASS) -> torch.Tensor:
    """[..., key] rows sorted ascending (sort_rows) -> [...] int: the fewest keys holding `mass` of each
    row's total (K90 for 0.9). Consumes `ordered` (its rows become cumulative sums).

    With C the cumulative sum of the sorted row, the top k keys hold >= mass of the total exactly
    when C[L-k] <= (1 - mass) * total, so k = L - #{j : C[j] <= (1 - mass) * total}.
    """
    cumulative = ordered.cumsum_(dim=-1)
    # (1 - mass + mass * K90_TOL) total: top-k sum >= mass * total * (1 - K90_TOL), rearranged.
    bound = ((1 - mass) + mass * K90_TOL) * cumulative[..., -1:].contiguous()
    # C is non-decreasing, so the count is a binary search (a comparison pass costs more than the sort).
    return ordered.shape[-1] - torch.searchsorted(cumulative, bound, right=True)[..., 0]


def sorted_row_entropy(ordered: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """H(row) / log n of rows [..., query, key] (any key order) with n [...] real keys -> [..., query]."""
    tiny = torch.finfo(ordered.dtype).tiny
    return -ordered.clamp_min(tiny).log_().mul_(ordered).sum(-1) / torch.log(n)[..., None]


def row_k90(a: torch.Tensor, mass: float = K90_MASS) -> torch.Tensor:
    """[..., query, key] -> [..., query] int64: the keys needed for `mass` of each row's total."""
    return keys_for_mass(sort_rows(_computable(a)), mass)


def band_mass(a: torch.Tensor, offsets: range) -> torch.Tensor:
    """Per query row, the mass on keys q + d for d in `offsets`: [..., query, key] -> [..., query]
    (0 where q + d is outside the matrix)."""
    total = 0
    for d in offsets:
        diagonal = a.diagonal(offset=d, dim1=-2, dim2=-1)  # A[q, q + d], [..., L - |d|]
        total = total + torch.nn.functional.pad(diagonal, (max(-d, 0), max(d, 0)))
    return total


def attention_measures(attn: torch.Tensor, n: torch.Tensor, top_keys: int, window: int | None = None) -> torch.Tensor:
    """The measures (attention_measure_names, module docstring) of each head's matrix.

    attn: [batch, head, query, key], real rows summing to 1 over the real keys (PAD keys 0);
    n: [batch] real-token counts. Returns [batch, head, measure], in attn's dtype (float32 at least).
    """
    batch, heads, length, _ = attn.shape
    attn = _computable(attn)
    dtype = attn.dtype
    tiny = torch.finfo(dtype).tiny
    # PAD keys hold no mass: keys beyond the longest sequence are dropped everywhere.
    top = int(n.max())
    keys = attn[..., :top]  # [batch, head, query (all rows), key]
    real_all = real_mask(n, length)[:, None, :].to(dtype)  # [batch, 1, query]
    inv = 1 / keys.norm(dim=-1).clamp_min(tiny)  # [batch, head, query]
    # One weighted sum over the rows gives the real rows' unit sum (attn_cone), the column masses
    # of the real rows (col_top) and the unit sum over every row, PAD included (attn_cone_ref).
    weights = torch.stack([real_all * inv, real_all.expand_as(inv), inv], dim=2)  # [batch, head, 3, query]
    sums = weights @ keys  # [batch, head, 3, key]
    a = attn[:, :, :top, :top]  # PAD rows are excluded from the rest: the [top, top] corner
    real = real_mask(n, top)  # [batch, query]
    rows = real[:, None, :].to(dtype)  # [batch, 1, query]
    nf = n.to(dtype)[:, None]  # [batch, 1]

    def row_mean(per_row: torch.Tensor) -> torch.Tensor:  # [batch, head, query] -> [batch, head]
        return (per_row * rows).sum(-1) / nf

    # Entropy and K90 on the rows sorted ascending: contiguous, so each pass over them is cheaper.
    ordered = sort_rows(a)
    entropy = sorted_row_entropy(ordered, nf)
    k90 = keys_for_mass(ordered, K90_MASS).to(dtype)
    quantiles = torch.tensor(K90_QUANTILES, device=a.device, dtype=dtype)
    k90_q = torch.nanquantile(k90.masked_fill(~real[:, None, :], float("nan")), quantiles, dim=-1)
    sep = (n - 1).view(batch, 1, 1, 1).expand(batch, heads, top, 1)
    ordinary = real.clone()  # keys 1..n-2: neither [CLS], [SEP] nor PAD
    ordinary[:, 0] = False
    ordinary[torch.arange(batch, device=a.device), n - 1] = False
    columns = sums[:, :, 1].masked_fill(~ordinary[:, None, :], 0)
    col_top = columns.topk(min(top_keys, top), dim=-1).values.sum(-1) / sums[:, :, 1].sum(-1)
    measures = [
        row_mean(entropy), row_mean(k90), row_mean(a[..., 0]), row_mean(a.gather(-1, sep).squeeze(-1)),
        row_mean(a.diagonal(dim1=-2, dim2=-1)), row_mean(band_mass(a, range(-1, 0))), row_mean(band_mass(a, range(1, 2))),
        *k90_q, col_top, sums[:, :, 0].norm(dim=-1) / nf, sums[:, :, 2].norm(dim=-1),
    ]  # fmt: skip
    if window is not None:
        measures += [row_mean(band_mass(a, range(-window, 0))), row_mean(band_mass(a, range(1, window + 1)))]
    return torch.stack(measures, dim=-1)


def vector_stats(x: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sufficient statistics of the real token vectors of each sequence.

    x: [batch, seq, *group, width] (group: e.g. head); real: [batch, seq] bool.
    Returns, each [batch, *group, width] or [batch, *group]:
      sum_unit = sum_real x/||x|| (a zero vector counts as 0), mean_vec = sum_real x / n,
      sum_sq_norm = sum_real ||x||^2 (float64), cone_ref = ||sum over ALL seq rows of x/||x|| ||.
    Clouds merge by adding sum_unit, n * mean_vec and sum_sq_norm (bertgeom.stats.cone.Moments).
    """
    x = _computable(x)
    norms = x.norm(dim=-1)  # [batch, seq, *group]
    inv = 1 / norms.clamp_min(torch.finfo(x.dtype).tiny)
    w = real.to(x.dtype).view(*real.shape, *([1] * (x.dim() - 3))).expand_as(norms)
    # One weighted sum over the tokens gives all three vector sums: weights [batch, 3, seq, *group].
    sums = torch.einsum("bks...,bs...d->bk...d", torch.stack([w * inv, w, inv], dim=1), x)
    return {
        "sum_unit": sums[:, 0],
        "mean_vec": sums[:, 1] / w.sum(1).unsqueeze(-1),
        "sum_sq_norm": (w.double() * norms.double() ** 2).sum(1),
        "cone_ref": sums[:, 2].norm(dim=-1),
    }
