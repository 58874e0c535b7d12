"""A local random checkpoint shaped like a hub BERT, for rehearsals at the paper's shapes without
network (tests/test_rehearsal.py, config/rehearsal.yaml, bertgeom plan --measured, benchmarks/gpu_check.py).

`write_random_checkpoint(dir)` writes what `model.init: pretrained` reads from a local directory:
config.json and model.safetensors of a randomly initialised BertForMaskedLM (bert-base-cased's
architecture: preset `base`, 512 positions) and a WordPiece vocab.txt of bert-base-cased's size
(28,996 entries, its special tokens at its ids: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK]
103), so the tokens stage extends a vocabulary of the real size and the embeddings are resized
as in the paper. The weights are random: the numbers it produces mean nothing, the shapes,
memory, disk and time are the paper's.
"""

from __future__ import annotations

from pathlib import Path

BERT_BASE_CASED_VOCAB = 28996
SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}  # as in bert-base-cased


def wordpiece_vocab(size: int = BERT_BASE_CASED_VOCAB) -> list[str]:
    """size tokens, line i = id i: the special tokens at bert-base-cased's ids, [unusedN] before them,
    then word pieces that are no k-mer of ACGT (so the k-mer extension adds every k-mer)."""
    tokens = [f"[unused{i}]" for i in range(size)]
    for token, index in SPECIAL_IDS.items():
        tokens[index] = token
    for i in range(max(SPECIAL_IDS.values()) + 1, size):
        tokens[i] = f"w{i}" if i % 2 else f"##w{i}"
    return tokens


def write_random_checkpoint(directory: str | Path, preset: str = "base", vocab_size: int = BERT_BASE_CASED_VOCAB, seed: int = 0) -> Path:
    """A random BertForMaskedLM of `preset` with a WordPiece vocab.txt of `vocab_size`, in `directory`."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from bertgeom.model import PRESETS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, max_position_embeddings=512, pad_token_id=SPECIAL_IDS["[PAD]"], **PRESETS[preset])
    BertForMaskedLM(config).save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(wordpiece_vocab(vocab_size)) + "\n", encoding="utf-8")
    return directory


if __name__ == "__main__":  # python -m bertgeom.rehearsal DIR
    import sys

    print(write_random_checkpoint(sys.argv[1]))
