"""Attention patterns and directionality vs naive baselines, side by side in one run (never gates CI).

Inputs of the paper's shape: attention matrices of 427 real tokens (random softmax rows), and a
bert-base attention layer (hidden 768, 12 heads of 64) with random weights. One numpy thread.

Prints three ratios (baseline time / ours; > 1 means ours is faster):
  cluster   the exact contiguous-block partition (vectorised dynamic programme over block ends,
            bertgeom.stats.attention.contiguous_partition) vs the same programme in pure Python
            loops with a 2-D prefix sum (identical result, checked)                      (target >= 10)
  eigen     eigenvalues of the symmetric part S of M = W_Q^h W_K^h^T through its rank-2d core
            (symmetric_eigenvalues) vs numpy eigvalsh of the full 768 x 768 S (same nonzero
            eigenvalues, checked)                                                          (target >= 4)
  matrix    all per-head metrics of one matrix (matrix_metrics: entropy, K90, masses, cluster,
            SVD) vs the SVD alone, the one step no metric set can skip                     (target <= 3,
            printed as ours / SVD)
and the projected time of attention_patterns' matrix loop at paper scale (144 heads x 16 sequences).

    .venv/bin/python benchmarks/bench_attention.py [--matrices 6]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bertgeom.stats.attention import contiguous_partition, matrix_metrics  # noqa: E402
from bertgeom.stats.directionality import symmetric_eigenvalues  # noqa: E402

N = 427


def naive_partition(w: np.ndarray, min_block: int) -> list[tuple[int, int]]:
    """The baseline: the same dynamic programme, one block at a time in Python."""
    n = len(w)
    p = w / w.sum()
    prefix = np.zeros((n + 1, n + 1))
    prefix[1:, 1:] = p.cumsum(0).cumsum(1)
    rows, cols = np.r_[0.0, p.sum(1).cumsum()], np.r_[0.0, p.sum(0).cumsum()]
    best, start = [0.0] + [-np.inf] * n, [0] * (n + 1)
    for end in range(min_block, n + 1):
        for a in range(0, end - min_block + 1):
            if best[a] == -np.inf:
                continue
            within = prefix[end, end] - prefix[a, end] - prefix[end, a] + prefix[a, a]
            gain = within - (rows[end] - rows[a]) * (cols[end] - cols[a])
            if best[a] + gain > best[end]:
                best[end], start[end] = best[a] + gain, a
    blocks, end = [], n
    while end > 0:
        blocks.append((start[end], end))
        end = start[end]
    return blocks[::-1]


def clock(fn, repeat: int) -> float:
    """Best of `repeat` wall times of fn() in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrices", type=int, default=6, help="matrices timed per measurement")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(args.matrices, N, N))
    mats = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    band = np.abs(np.subtract.outer(np.arange(N), np.arange(N))) > 4
    blocks_in = mats[0] * band

    assert naive_partition(blocks_in, 8) == contiguous_partition(blocks_in, 8)
    t_naive = clock(lambda: naive_partition(blocks_in, 8), 1)
    t_ours = clock(lambda: contiguous_partition(blocks_in, 8), 3)
    print(
        f"cluster  contiguous partition, n={N}: naive {t_naive * 1e3:.0f} ms, ours {t_ours * 1e3:.1f} ms, ratio {t_naive / t_ours:.1f}x"
    )

    hidden, d = 768, 64
    a, b = rng.normal(size=(hidden, d)), rng.normal(size=(hidden, d))
    full = np.linalg.eigvalsh((a @ b.T + b @ a.T) / 2)
    assert np.allclose(
        np.sort(symmetric_eigenvalues(a, b)), np.sort(full[np.argsort(np.abs(full))[-2 * d :]]), atol=1e-8
    )
    t_full = clock(lambda: np.linalg.eigvalsh((a @ b.T + b @ a.T) / 2), 3)
    t_core = clock(lambda: symmetric_eigenvalues(a, b), 3)
    print(
        f"eigen    S eigenvalues, hidden {hidden}, d {d}: full {t_full * 1e3:.0f} ms, rank-2d core {t_core * 1e3:.1f} ms, ratio {t_full / t_core:.1f}x"
    )

    t_svd = clock(lambda: [np.linalg.svd(m, compute_uv=False) for m in mats], 2) / len(mats)
    t_all = clock(lambda: [matrix_metrics(m, 4, 5, 8, 5, 1e-3) for m in mats], 2) / len(mats)
    print(
        f"matrix   per-head metrics of one {N}x{N} matrix: SVD alone {t_svd * 1e3:.0f} ms, all metrics {t_all * 1e3:.0f} ms, ratio {t_all / t_svd:.2f}x"
    )
    print(
        f"paper scale: 144 heads x 16 sequences = 2304 matrices -> about {2304 * t_all / 60:.1f} min for the matrix loop"
    )


if __name__ == "__main__":
    main()
