"""k-mer tokenization of spike genes and the stratified train/val/test split (the paper's scheme).

A spike gene (nt, in frame from the ATG) is right-padded with N to a whole number of windows and cut
into overlapping k-mers (default k = 12, stride = 9: four codons per token, one codon overlap):
[CLS] + k-mers + [SEP], padded with [PAD] to `max_length`. A k-mer containing N or another IUPAC
ambiguity code is [UNK]; so is a k-mer not in the vocabulary, which is built from the training split
only. The saved tokenizer is a real Hugging Face tokenizer (a `tokenizers` WordLevel model over the
space-joined k-mers); `KmerTokenizer.encode` gives the same ids from the raw sequences, vectorised in
numpy (2 bits per base, k-mer codes, binary search in the sorted vocabulary codes).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bertgeom.data.variants import SPIKE_END, SPIKE_START, spike_domains
from bertgeom.io import file_directory, fixed_size_list, provenance, staging_directory, write_json, write_parquet

log = logging.getLogger("bertgeom.tokens")

# Role -> token, in the order of their ids in a vocabulary built from scratch.
SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
# The tokenizer files of a Hugging Face directory: {name in rules and code: file name}.
TOKENIZER_NAMES = {name: f"{name}.json" for name in ("tokenizer", "tokenizer_config", "special_tokens_map")}
TOKENIZER_FILES = tuple(TOKENIZER_NAMES.values())
SPLITS = ("train", "val", "test")
SPIKE_COLUMNS = ("seq_id", "class", "label", "lineage", "sequence")

# Base -> 2-bit code; 4 = IUPAC ambiguity code (valid input, but its k-mer is [UNK]); 255 = invalid.
_AMBIGUOUS = 4
_INVALID = 255
_BASE_CODE = np.full(256, _INVALID, dtype=np.uint8)
_BASE_CODE[np.frombuffer(b"ACGT", np.uint8)] = np.arange(4, dtype=np.uint8)
_BASE_CODE[np.frombuffer(b"NRYSWKMBDHV", np.uint8)] = _AMBIGUOUS
_BASE_TABLE = _BASE_CODE.tobytes()  # the same map for bytes.translate (C speed, no numpy temporaries)
_LETTERS = np.frombuffer(b"ACGT", np.uint8)
_CHUNK = 1024  # sequences per vectorised block: keeps the [chunk, nt] matrices in cache-sized pieces


def n_kmers(lengths: np.ndarray | int, k: int, stride: int) -> np.ndarray:
    """Number of k-mers of sequences of `lengths` nt once right-padded with N to whole windows.

    m = 1 + ceil(max(L - k, 0) / stride); the padded length is (m - 1) * stride + k.
    Example: L = 3822, k = 12, stride = 9 -> m = 1 + ceil(3810 / 9) = 425, padded to 3828 nt.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    return 1 + -(-np.maximum(lengths - k, 0) // stride)


def max_sequence_length(max_length: int, k: int, stride: int) -> int:
    """Longest sequence (nt) whose k-mers plus [CLS] and [SEP] fit in `max_length` tokens."""
    return (max_length - 3) * stride + k


def kmers(sequence: str, k: int, stride: int) -> list[str]:
    """The k-mer strings of one sequence (N-padded), as the Hugging Face tokenizer expects them."""
    m = int(n_kmers(len(sequence), k, stride))
    padded = sequence + "N" * ((m - 1) * stride + k - len(sequence))
    return [padded[i : i + k] for i in range(0, m * stride, stride)]


def _code_dtype(k: int) -> type:
    return np.uint32 if k <= 16 else np.uint64


def _fold(bases: np.ndarray, k: int) -> np.ndarray:
    """[n, k] 2-bit base codes -> [n] k-mer codes (first base in the highest bits)."""
    codes = np.zeros(len(bases), dtype=_code_dtype(k))
    for i in range(k):
        codes = (codes << 2) | bases[:, i]
    return codes


def decode_kmers(codes: np.ndarray, k: int) -> np.ndarray:
    """k-mer codes [n] -> k-mer strings [n] (inverse of the 2-bit packing)."""
    codes = np.asarray(codes, dtype=_code_dtype(k))
    shifts = (2 * np.arange(k - 1, -1, -1)).astype(codes.dtype)
    letters = _LETTERS[(codes[:, None] >> shifts) & 3]
    return np.ascontiguousarray(letters).view(f"S{k}").ravel().astype(str)


def encode_kmer_strings(tokens: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes of the tokens that are k-mers over ACGT, and their positions in `tokens`."""
    candidates = [i for i, t in enumerate(tokens) if len(t) == k and t.isascii()]
    if not candidates:
        return np.zeros(0, dtype=_code_dtype(k)), np.zeros(0, dtype=np.int64)
    raw = np.array([tokens[i] for i in candidates], dtype=f"S{k}").view(np.uint8).reshape(-1, k)
    bases = _BASE_CODE[raw]
    keep = (bases < 4).all(axis=1)
    return _fold(bases[keep], k), np.asarray(candidates)[keep]


def _name(names: Sequence[str] | None, i: int) -> str:
    return f"{names[i]!r}" if names is not None else f"#{i}"


def check_sequences(
    sequences: Sequence[str], k: int, stride: int, max_length: int | None = None, names: Sequence[str] | None = None
) -> np.ndarray:
    """Lengths of the sequences; ValueError naming the first empty or too long one (with the numbers)."""
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise ValueError(f"sequence {_name(names, int(empty[0]))}: empty sequence")
    if max_length is not None:
        m = n_kmers(lengths, k, stride)
        too_long = np.flatnonzero(m + 2 > max_length)
        if too_long.size:
            i = int(too_long[0])
            raise ValueError(
                f"sequence {_name(names, i)}: {lengths[i]} nt gives {m[i]} k-mers (k={k}, stride={stride}), "
                f"{m[i] + 2} tokens with [CLS] and [SEP], more than max_length={max_length} "
                f"(at most {max_sequence_length(max_length, k, stride)} nt fit)"
            )
    return lengths


def kmer_code_blocks(
    sequences: Sequence[str], k: int, stride: int, names: Sequence[str] | None = None, chunk: int = _CHUNK
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Vectorised k-mer codes, a block of sequences at a time.

    Yields (first index, codes [block, M], ambiguous [block, M], m [block]) where M is the block's
    largest k-mer count, m the count of each sequence; entries at j >= m are meaningless.
    ValueError naming the sequence, the position and the character for anything but A, C, G, T and
    the IUPAC ambiguity codes N, R, Y, S, W, K, M, B, D, H, V (uppercase).
    """
    lengths = check_sequences(sequences, k, stride, names=names)
    for start in range(0, len(sequences), chunk):
        block = sequences[start : start + chunk]
        m = n_kmers(lengths[start : start + chunk], k, stride)
        width = int((m.max() - 1) * stride + k)
        bases = np.full((len(block), width), _AMBIGUOUS, dtype=np.uint8)  # N padding
        for i, seq in enumerate(block):
            # errors="replace" keeps one byte per character, so positions stay right; "?" is invalid
            coded = seq.encode("ascii", errors="replace").translate(_BASE_TABLE)
            if _INVALID in coded:
                col = coded.index(_INVALID)
                raise ValueError(
                    f"sequence {_name(names, start + i)}: invalid character {seq[col]!r} at nt {col + 1}; expected "
                    "uppercase A, C, G, T or an IUPAC ambiguity code (N, R, Y, S, W, K, M, B, D, H, V)"
                )
            bases[i, : len(seq)] = np.frombuffer(coded, np.uint8)
        n_windows = int(m.max())
        codes = np.zeros((len(block), n_windows), dtype=_code_dtype(k))
        ambiguous = np.zeros((len(block), n_windows), dtype=bool)
        for i in range(k):
            # base i of every window: columns i, i + stride, ... [block, M]
            column = bases[:, i : i + (n_windows - 1) * stride + 1 : stride]
            codes = (codes << 2) | (column & 3)
            ambiguous |= column == _AMBIGUOUS
        yield start, codes, ambiguous, m


def count_kmers(sequences: Sequence[str], k: int, stride: int, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Occurrences of each unambiguous k-mer over the sequences: columns kmer, count; by count desc, kmer."""
    found = []
    for _, codes, ambiguous, m in kmer_code_blocks(sequences, k, stride, names):
        real = np.arange(codes.shape[1]) < m[:, None]
        found.append(codes[real & ~ambiguous])
    values, counts = np.unique(np.concatenate(found) if found else np.zeros(0, _code_dtype(k)), return_counts=True)
    table = pd.DataFrame({"kmer": decode_kmers(values, k), "count": counts.astype(np.int64)})
    return table.sort_values(["count", "kmer"], ascending=[False, True], ignore_index=True)


def load_base_vocab(name_or_path: str | os.PathLike) -> tuple[dict[str, int], dict[str, str]]:
    """A WordPiece vocabulary to extend (model.init: pretrained) and its special tokens.

    A local directory with vocab.txt is read directly (id = line number, as BERT's loader does);
    anything else goes through `AutoTokenizer.from_pretrained` (a hub id needs the network).
    """
    path = Path(name_or_path)
    if (path / "vocab.txt").is_file():
        with open(path / "vocab.txt", encoding="utf-8") as handle:
            vocab = {line.rstrip("\n"): i for i, line in enumerate(handle)}
        specials = dict(SPECIAL_TOKENS)
        source = str(path / "vocab.txt")
    else:
        from transformers import AutoTokenizer

        try:
            base = AutoTokenizer.from_pretrained(str(name_or_path))
        except Exception as error:
            raise ValueError(
                f"model.pretrained={str(name_or_path)!r}: not a directory with vocab.txt, and "
                f"AutoTokenizer.from_pretrained failed (offline?): {error}"
            ) from error
        vocab = base.get_vocab()
        specials = {role: getattr(base, f"{role}_token") for role in SPECIAL_TOKENS}
        source = str(name_or_path)
    missing = {role: token for role, token in specials.items() if token not in vocab}
    if missing:
        raise ValueError(f"{source}: the base vocabulary lacks the special tokens {missing}")
    return vocab, specials


def build_vocab(kmer_list: Sequence[str], base: dict[str, int] | None = None) -> dict[str, int]:
    """Token -> id. Scratch: the special tokens (ids 0-4), then the k-mers in the given order.

    With a base vocabulary every original id is kept and the new k-mers get the ids after its largest
    (a k-mer already in the base keeps its base id), as the paper extended bert-base-cased.
    """
    if base is None:
        return {token: i for i, token in enumerate([*SPECIAL_TOKENS.values(), *kmer_list])}
    vocab = dict(base)
    next_id = max(vocab.values()) + 1
    for kmer in kmer_list:
        if kmer not in vocab:
            vocab[kmer] = next_id
            next_id += 1
    return vocab


class KmerTokenizer:
    """k-mer tokenizer of spike genes: a vocabulary (token -> id), k, stride, max_length, special tokens."""

    def __init__(
        self,
        vocab: dict[str, int],
        k: int = 12,
        stride: int = 9,
        max_length: int = 512,
        special_tokens: dict[str, str] | None = None,
    ):
        if not 1 <= stride <= k:
            raise ValueError(f"tokens.stride={stride}: expected 1 <= stride <= k={k} (no base may be skipped)")
        if not 1 <= k <= 31:
            raise ValueError(f"tokens.k={k}: expected 1 <= k <= 31 (2 bits per base in 64-bit codes)")
        self.vocab = dict(vocab)
        self.k, self.stride, self.max_length = int(k), int(stride), int(max_length)
        self.special_tokens = dict(special_tokens or SPECIAL_TOKENS)
        missing = [token for token in self.special_tokens.values() if token not in self.vocab]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {missing}")
        for role, token in self.special_tokens.items():
            setattr(self, f"{role}_id", int(self.vocab[token]))
        # Sorted k-mer codes and their ids, for the binary-search lookup in encode().
        tokens = list(self.vocab)
        codes, where = encode_kmer_strings(tokens, self.k)
        order = np.argsort(codes)
        self._codes = codes[order]
        self._ids = np.array([self.vocab[tokens[i]] for i in where[order]], dtype=np.int32)

    def __len__(self) -> int:
        """Rows of the embedding matrix: largest id + 1."""
        return max(self.vocab.values()) + 1

    def __repr__(self) -> str:
        return (
            f"KmerTokenizer(k={self.k}, stride={self.stride}, max_length={self.max_length}, "
            f"vocab={len(self.vocab)} tokens, {len(self._codes)} k-mers)"
        )

    @property
    def n_kmers_in_vocab(self) -> int:
        return len(self._codes)

    def kmers(self, sequence: str) -> list[str]:
        return kmers(sequence, self.k, self.stride)

    def kmer_text(self, sequence: str) -> str:
        """The space-joined k-mers: the text the Hugging Face tokenizer takes."""
        return " ".join(self.kmers(sequence))

    def encode(self, sequences: Sequence[str], names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Token ids int32 [N, max_length] and real-token counts int32 [N] ([CLS] and [SEP] included).

        Equal to the Hugging Face tokenizer's ids on `kmer_text(sequence)` padded to max_length.
        A sequence too long for max_length is a ValueError naming it (`names[i]`, else its index).
        """
        sequences = list(sequences)
        check_sequences(sequences, self.k, self.stride, self.max_length, names)
        ids = np.full((len(sequences), self.max_length), self.pad_id, dtype=np.int32)
        n_tokens = np.zeros(len(sequences), dtype=np.int32)
        ids[:, 0] = self.cls_id
        for start, codes, ambiguous, m in kmer_code_blocks(sequences, self.k, self.stride, names):
            kmer_ids = self._lookup(codes, ambiguous)
            rows = slice(start, start + len(m))
            real = np.arange(codes.shape[1]) < m[:, None]
            ids[rows, 1 : codes.shape[1] + 1] = np.where(real, kmer_ids, self.pad_id)
            ids[np.arange(start, start + len(m)), m + 1] = self.sep_id
            n_tokens[rows] = m + 2
        return ids, n_tokens

    def _lookup(self, codes: np.ndarray, ambiguous: np.ndarray) -> np.ndarray:
        """k-mer codes [n, M] -> ids [n, M]; ambiguous or unknown -> unk_id."""
        if not len(self._codes):
            return np.full(codes.shape, self.unk_id, dtype=np.int32)
        pos = np.minimum(np.searchsorted(self._codes, codes), len(self._codes) - 1)
        found = (self._codes[pos] == codes) & ~ambiguous
        return np.where(found, self._ids[pos], self.unk_id).astype(np.int32)

    def hf_tokenizer(self):
        """The equivalent `transformers` fast tokenizer (WordLevel over whitespace-split k-mers)."""
        from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast

        s = self.special_tokens
        backend = Tokenizer(models.WordLevel(self.vocab, unk_token=s["unk"]))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        backend.post_processor = processors.TemplateProcessing(
            single=f"{s['cls']} $A {s['sep']}",
            pair=f"{s['cls']} $A {s['sep']} $B:1 {s['sep']}:1",
            special_tokens=[(s["cls"], self.cls_id), (s["sep"], self.sep_id)],
        )
        backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in s.values()])
        return PreTrainedTokenizerFast(
            tokenizer_object=backend,
            model_max_length=self.max_length,
            **{f"{role}_token": token for role, token in s.items()},
        )

    def save(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json, tokenizer_config.json (with k, stride, max_length) and special_tokens_map.json.

        `AutoTokenizer.from_pretrained(directory)` loads them; each file is renamed into place complete.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with staging_directory(directory / TOKENIZER_NAMES["tokenizer"]) as tmp:
            self.hf_tokenizer().save_pretrained(tmp)
            config = json.loads((tmp / "tokenizer_config.json").read_text())
            # The portable class name (transformers 4 and 5 both know it).
            config.update(tokenizer_class="PreTrainedTokenizerFast", k=self.k, stride=self.stride)
            config.update(max_length=self.max_length)
            write_json(tmp / "tokenizer_config.json", config)
            write_json(tmp / "special_tokens_map.json", {f"{r}_token": t for r, t in self.special_tokens.items()})
            for name in TOKENIZER_FILES:
                os.replace(tmp / name, directory / name)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "KmerTokenizer":
        """Read a tokenizer written by `save` (or copied with a model)."""
        directory = Path(directory)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name}: missing (expected a k-mer tokenizer directory)")
        model = json.loads((directory / "tokenizer.json").read_text())["model"]
        if model.get("type") != "WordLevel":
            raise ValueError(f"{directory / 'tokenizer.json'}: model type {model.get('type')!r}, expected WordLevel")
        config = json.loads((directory / "tokenizer_config.json").read_text())
        missing = [key for key in ("k", "stride", "max_length") if key not in config]
        if missing:
            raise ValueError(f"{directory / 'tokenizer_config.json'}: missing k-mer keys {missing}")
        specials = {role: config.get(f"{role}_token", token) for role, token in SPECIAL_TOKENS.items()}
        return cls(model["vocab"], config["k"], config["stride"], config["max_length"], specials)


def split_sizes(n: int, test_fraction: float, val_fraction: float) -> dict[str, int]:
    """Sizes of the train, val and test splits of `n` sequences as stratified_split draws them
    (scikit-learn: ceil(fraction x n) held out, test first, then val from the rest)."""
    test = math.ceil(test_fraction * n)
    val = math.ceil(val_fraction * (n - test))
    return {"train": n - test - val, "val": val, "test": test}


def stratified_split(
    labels: Sequence[int],
    test_fraction: float = 0.2,
    val_fraction: float = 0.08,
    seed: int = 42,
    classes: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Row indices of train, val, test (each sorted): test first, then val from the rest, both stratified.

    A class with too few sequences (fewer than 3, or fewer than 2 left for the validation split) is a
    ValueError naming it; so is a split too small to hold one sequence per class.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)

    def too_few(index: np.ndarray, minimum: int) -> str:
        """'Mu' (2), ... for the classes with fewer than `minimum` sequences among `index`."""
        values, counts = np.unique(labels[index], return_counts=True)
        names = [repr(classes[v]) if classes is not None else f"label {v}" for v in values]
        return ", ".join(f"{name} ({count})" for name, count in zip(names, counts) if count < minimum)

    def split(index: np.ndarray, fraction: float, key: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            return train_test_split(index, test_size=fraction, stratify=labels[index], random_state=seed)
        except ValueError as error:
            raise ValueError(f"stratified split of {len(index)} sequences with {key}={fraction}: {error}") from error

    if small := too_few(np.arange(len(labels)), 3):
        raise ValueError(f"too few sequences for a stratified train/val/test split (at least 3 per class): {small}")
    rest, test = split(np.arange(len(labels)), test_fraction, "tokens.test_fraction")
    if small := too_few(rest, 2):
        raise ValueError(
            f"too few sequences left after the test split for a stratified validation split (at least 2 per "
            f"class): {small}; add sequences or lower tokens.test_fraction"
        )
    train, val = split(rest, val_fraction, "tokens.val_fraction")
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def token_map(
    max_length: int, k: int, stride: int, domains: Sequence, spike_nt: int = SPIKE_END - SPIKE_START + 1
) -> pa.Table:
    """One row per position of a reference-length spike: kind, nt/codon/aa ranges and domains.

    Token t >= 1 covers nt (t-1)*stride+1 .. (t-1)*stride+k (1-based, inclusive; beyond `spike_nt` is
    N padding), codons ceil(nt_start/3) .. ceil(nt_end/3), amino acids the same clipped to the
    protein (the last codon is the stop). Sequences with indels shift these coordinates.
    """
    m = int(n_kmers(spike_nt, k, stride))
    n_aa = spike_nt // 3 - 1
    rows = []
    for position in range(max_length):
        row = {"position": position, "token_kind": "pad", "domains": []}  # missing coordinates are null
        if position == 0:
            row["token_kind"] = "cls"
        elif position == m + 1:
            row["token_kind"] = "sep"
        elif position <= m:
            nt_start = (position - 1) * stride + 1
            nt_end = nt_start + k - 1
            codon_start, codon_end = (nt_start + 2) // 3, (nt_end + 2) // 3
            row.update(token_kind="kmer", nt_start=nt_start, nt_end=nt_end)
            row.update(codon_start=codon_start, codon_end=codon_end)
            if codon_start <= n_aa:
                aa_end = min(codon_end, n_aa)
                row.update(aa_start=codon_start, aa_end=aa_end)
                row["domains"] = [d.name for d in domains if d.start <= aa_end and d.end >= codon_start]
        rows.append(row)
    schema = pa.schema(
        [("position", pa.int32()), ("token_kind", pa.string())]
        + [(name, pa.int32()) for name in ("nt_start", "nt_end", "codon_start", "codon_end", "aa_start", "aa_end")]
        + [("domains", pa.list_(pa.string()))]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def read_spike(path: str | os.PathLike) -> pd.DataFrame:
    """The columns of spike.parquet this stage needs; ValueError naming the file if any is missing."""
    columns = pq.read_schema(path).names
    missing = [c for c in SPIKE_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(SPIKE_COLUMNS)} (docs/outputs.md)")
    table = pq.read_table(path, columns=list(SPIKE_COLUMNS)).to_pandas()
    if table.empty:
        raise ValueError(f"{path}: no sequences")
    if table["seq_id"].duplicated().any():
        raise ValueError(f"{path}: duplicate seq_id {table['seq_id'][table['seq_id'].duplicated()].iloc[0]!r}")
    return table


def split_table(spike: pd.DataFrame, ids: np.ndarray, n_tokens: np.ndarray) -> pa.Table:
    """The rows of one split in the format of docs/outputs.md (tokens section)."""
    return pa.table(
        {
            "seq_id": pa.array(spike["seq_id"].astype(str).tolist(), pa.string()),
            "class": pa.array(spike["class"].astype(str).tolist(), pa.string()),
            "label": pa.array(spike["label"].to_numpy(), pa.int16()),
            "lineage": pa.array(spike["lineage"].tolist(), pa.string()),
            "input_ids": fixed_size_list(ids, pa.int32()),
            "n_tokens": pa.array(n_tokens, pa.int32()),
        }
    )


def split_and_tokenize(
    spike: str | os.PathLike,
    variants: str | os.PathLike,
    outputs: dict[str, str | os.PathLike],
    classes: list[str],
    tokens: dict,
    base_vocab: str | None = None,
) -> None:
    """Rule split_and_tokenize: the stratified splits, the vocabulary and the tokenized splits.

    outputs: {train, val, test, kmer_counts, token_map: parquet paths; tokenizer, tokenizer_config,
    special_tokens_map: the tokenizer files, in one directory}. tokens: config `tokens`. base_vocab:
    the pretrained checkpoint (directory or hub id) whose vocabulary the k-mers extend, or None.
    """
    k, stride, max_length = tokens["k"], tokens["stride"], tokens["max_length"]
    tokenizer_dir = file_directory({name: outputs[name] for name in TOKENIZER_NAMES}, TOKENIZER_NAMES)
    table = read_spike(spike)
    log.info("%d sequences from %s", len(table), spike)
    labels = table["label"].to_numpy()
    splits = stratified_split(labels, tokens["test_fraction"], tokens["val_fraction"], tokens["split_seed"], classes)
    log.info("split (seed %d): %s", tokens["split_seed"], {s: len(i) for s, i in splits.items()})

    train = table.iloc[splits["train"]]
    counts = count_kmers(train["sequence"].tolist(), k, stride, train["seq_id"].tolist())
    counts["in_vocab"] = counts["count"] >= tokens["min_count"]
    counts["rank"] = np.arange(1, len(counts) + 1, dtype=np.int64)
    base, specials = load_base_vocab(base_vocab) if base_vocab else (None, None)
    vocab = build_vocab(counts["kmer"][counts["in_vocab"]].tolist(), base)
    tokenizer = KmerTokenizer(vocab, k, stride, max_length, specials)
    log.info("%d distinct k-mers in train, %d in vocab: %r", len(counts), counts["in_vocab"].sum(), tokenizer)

    # Encode every split before writing anything: a too-long sequence fails the job with no output.
    tables = {}
    for name, index in splits.items():
        start = time.perf_counter()
        part = table.iloc[index]
        ids, n_tokens = tokenizer.encode(part["sequence"].tolist(), part["seq_id"].tolist())
        tables[name] = split_table(part, ids, n_tokens)
        unk = float((ids == tokenizer.unk_id).sum() / n_tokens.sum())
        seconds = time.perf_counter() - start
        log.info("%s: %d sequences in %.2f s, [UNK] share of real tokens %.4f", name, len(part), seconds, unk)

    sizes = {name: len(index) for name, index in splits.items()}
    settings = {"classes": classes, "tokens": tokens, "base_vocab": base_vocab}
    meta = provenance(settings, tokens=tokens, vocab_size=len(tokenizer), splits=sizes)
    tokenizer.save(tokenizer_dir)
    for name in SPLITS:
        write_parquet(tables[name], outputs[name], meta)
    write_parquet(counts, outputs["kmer_counts"], meta)
    write_parquet(token_map(max_length, k, stride, spike_domains(variants)), outputs["token_map"], meta)
    log.info("wrote %s", tokenizer_dir)
