"""Tokenization speed: the vectorised numpy path against the Hugging Face tokenizer, side by side.

Both give the same ids (checked here on every sequence). The Hugging Face side is timed on the
space-joined k-mer strings only (building the strings is timed separately and not charged to it),
as a transformers user would call it: tokenizer(texts, padding="max_length", max_length=512).
Target: the vectorised path at least 10x faster.

    .venv/bin/python benchmarks/bench_tokens.py            # 20,000 spike sequences
    .venv/bin/python benchmarks/bench_tokens.py --n 2000   # quicker
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bertgeom.data.variants import SPIKE_END, SPIKE_START, read_reference
from bertgeom.tokens import KmerTokenizer, build_vocab, count_kmers

ROOT = Path(__file__).resolve().parents[1]


def spike_sequences(n: int, seed: int = 0) -> list[str]:
    """n reference spikes with ~0.1% random substitutions and, in one in four, a run of 30-250 N."""
    spike = read_reference(ROOT / "resources" / "NC_045512.2.fasta")[SPIKE_START - 1 : SPIKE_END]
    ref = np.frombuffer(spike.encode(), np.uint8)
    rng = np.random.default_rng(seed)
    seqs = np.tile(ref, (n, 1))
    rows = np.repeat(np.arange(n), 4)
    seqs[rows, rng.integers(0, len(ref), rows.size)] = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, rows.size)]
    for i in np.flatnonzero(rng.random(n) < 0.25):
        start, length = rng.integers(0, len(ref) - 250), rng.integers(30, 251)
        seqs[i, start : start + length] = ord("N")
    return [row.tobytes().decode() for row in seqs]


def best_time(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="spike sequences (default 20,000)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per side; the best is reported")
    args = parser.parse_args()

    seqs = spike_sequences(args.n)
    train = seqs[: int(0.8 * len(seqs))]  # vocabulary from 80%: the rest brings unseen k-mers ([UNK])
    tok = KmerTokenizer(build_vocab(count_kmers(train, 12, 9)["kmer"].tolist()), 12, 9, 512)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save(tmp)
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(tmp)

    t_fast, (ids, n_tokens) = best_time(lambda: tok.encode(seqs), args.repeat)
    t_text, texts = best_time(lambda: [tok.kmer_text(s) for s in seqs], 1)
    t_hf, out = best_time(lambda: hf(texts, padding="max_length", max_length=512, return_tensors="np"), args.repeat)
    assert np.array_equal(out["input_ids"], ids), "the two paths disagree"
    assert np.array_equal(out["attention_mask"].sum(axis=1), n_tokens)

    n = len(seqs)
    print(f"{n} spike sequences, {tok.n_kmers_in_vocab} k-mers in the vocabulary, ids identical: yes")
    parallel = os.environ.get("TOKENIZERS_PARALLELISM", "unset (on)")
    print(f"CPU cores visible: {os.cpu_count()}; TOKENIZERS_PARALLELISM={parallel}")
    print(f"vectorised numpy (KmerTokenizer.encode)   {t_fast:8.3f} s  {n / t_fast:10.0f} seq/s")
    print(f"Hugging Face on k-mer strings (tokenizer) {t_hf:8.3f} s  {n / t_hf:10.0f} seq/s")
    print(f"  (+ building the k-mer strings           {t_text:8.3f} s, not counted above)")
    print(f"speed-up: {t_hf / t_fast:.1f}x (target >= 10x); with string building {(t_hf + t_text) / t_fast:.1f}x")


if __name__ == "__main__":
    main()
