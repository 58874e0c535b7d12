"""bertgeom.tokens: k-mer tokenization (worked example, agreement with AutoTokenizer), splits, outputs."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from bertgeom import io, tokens
from bertgeom.data.variants import SPIKE_END, SPIKE_START, Domain, read_reference
from bertgeom.tokens import KmerTokenizer

CLASSES = ["GH", "Lambda", "Mu", "Alpha"]


@pytest.fixture(scope="module")
def spike(root) -> str:
    return read_reference(root / "resources" / "NC_045512.2.fasta")[SPIKE_START - 1 : SPIKE_END]


def mutate(seq: str, rng: np.random.Generator, n_subs: int = 5, n_run: int = 0, alphabet: str = "ACGT") -> str:
    """Random substitutions from `alphabet` and one run of N of length n_run."""
    chars = np.array(list(seq))
    pos = rng.choice(len(chars), n_subs, replace=False)
    chars[pos] = rng.choice(list(alphabet), n_subs)
    if n_run:
        start = rng.integers(0, len(chars) - n_run)
        chars[start : start + n_run] = "N"
    return "".join(chars)


def hf_ids(directory, texts, max_length):
    hf = AutoTokenizer.from_pretrained(str(directory))
    out = hf(texts, padding="max_length", max_length=max_length, return_tensors="np")
    return out["input_ids"], out["attention_mask"].sum(axis=1)


def test_n_kmers_and_capacity():
    assert tokens.n_kmers([1, 12, 13, 21, 22, 3822], 12, 9).tolist() == [1, 1, 2, 2, 3, 425]
    longest = tokens.max_sequence_length(512, 12, 9)
    assert longest == 4593 and tokens.n_kmers(longest, 12, 9) + 2 == 512
    assert tokens.n_kmers(longest + 1, 12, 9) + 2 == 513
    assert tokens.kmers("ACGTACGTAC", 4, 3) == ["ACGT", "TACG", "GTAC"]  # covered exactly, no padding
    assert tokens.kmers("ACGTACGTACG", 4, 3) == ["ACGT", "TACG", "GTAC", "CGNN"]


def test_worked_example_reference_spike(spike, tmp_path):
    assert len(spike) == 3822 and spike.startswith("ATG")
    kmers = tokens.kmers(spike, 12, 9)
    assert len(kmers) == 425
    assert kmers[0] == spike[:12] == "ATGTTTGTTTTT"
    assert kmers[1] == spike[9:21]  # second k-mer starts at nt 10 (1-based)
    assert kmers[-1] == spike[3816:] + "NNNNNN"  # nt 3817..3828: codons 1273, 1274 (stop TAA), 2 of N

    tok = KmerTokenizer(tokens.build_vocab(kmers[:-1]), 12, 9, 512)
    ids, n_tokens = tok.encode([spike], names=["ref"])
    assert ids.shape == (1, 512) and ids.dtype == np.int32 and n_tokens.tolist() == [427]
    row = ids[0]
    assert row[0] == tok.cls_id and row[426] == tok.sep_id and (row[427:] == tok.pad_id).all()
    assert row[1] == tok.vocab["ATGTTTGTTTTT"] and row[2] == tok.vocab[spike[9:21]]
    assert row[425] == tok.unk_id  # the last k-mer holds N padding
    assert (row[1:425] != tok.unk_id).all()

    domains = [Domain("RBD", 319, 541)]
    tmap = tokens.token_map(512, 12, 9, domains).to_pandas().set_index("position")
    assert tmap.loc[0, "token_kind"] == "cls" and tmap.loc[426, "token_kind"] == "sep"
    assert tmap.loc[427, "token_kind"] == "pad" and (tmap["token_kind"] == "kmer").sum() == 425
    assert tmap.loc[1, ["nt_start", "nt_end", "codon_start", "codon_end"]].tolist() == [1, 12, 1, 4]
    assert tmap.loc[2, ["nt_start", "codon_start", "codon_end"]].tolist() == [10, 4, 7]
    assert tmap.loc[425, ["nt_start", "nt_end", "codon_start", "codon_end"]].tolist() == [3817, 3828, 1273, 1276]
    assert tmap.loc[425, ["aa_start", "aa_end"]].tolist() == [1273, 1273]  # codon 1274 is the stop
    # token t covers codons 3(t-1)+1 .. 3(t-1)+4; RBD (aa 319-541) starts in token 106 (codons 316-319)
    assert list(tmap.loc[106, "domains"]) == ["RBD"] and list(tmap.loc[105, "domains"]) == []
    assert list(tmap.loc[181, "domains"]) == ["RBD"] and list(tmap.loc[182, "domains"]) == []


@pytest.mark.parametrize("k,stride,max_length", [(12, 9, 512), (5, 3, 40), (17, 11, 24)])
def test_vectorised_ids_equal_autotokenizer(tmp_path, k, stride, max_length):
    rng = np.random.default_rng(k)
    longest = tokens.max_sequence_length(max_length, k, stride)
    lengths = rng.integers(1, longest + 1, 60)
    lengths[:3] = [1, k, longest]
    seqs = ["".join(rng.choice(list("ACGT"), n, p=[0.4, 0.1, 0.1, 0.4])) for n in lengths]
    # N, other IUPAC codes, and N runs in some sequences
    seqs = [mutate(s, rng, min(3, len(s)), 0, "NRYKMSWBDHV") if i % 3 == 0 else s for i, s in enumerate(seqs)]
    seqs[5] = "N" * len(seqs[5])
    train = tokens.count_kmers(seqs[:30], k, stride)
    tok = KmerTokenizer(tokens.build_vocab(train["kmer"].tolist()), k, stride, max_length)
    tok.save(tmp_path)
    ids, n_tokens = tok.encode(seqs)
    expected, expected_n = hf_ids(tmp_path, [tok.kmer_text(s) for s in seqs], max_length)
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(n_tokens, expected_n)
    # a real test: both known and [UNK] k-mers occur beyond [CLS]/[SEP]/[PAD]
    assert (ids == tok.unk_id).sum() > 0 and (ids > 4).sum() > 0


def test_count_kmers_and_codes_round_trip():
    counts = tokens.count_kmers(["ACGTACGTAC", "ACGTNCGT", "TTTT"], 4, 3)
    # ACGTACGTAC -> ACGT TACG GTAC; ACGTNCGT -> ACGT TNCG(unk) GTNN(unk); TTTT -> TTTT
    assert counts.values.tolist() == [["ACGT", 2], ["GTAC", 1], ["TACG", 1], ["TTTT", 1]]
    rng = np.random.default_rng(0)
    for k in (3, 12, 16, 17, 31):
        words = ["".join(rng.choice(list("ACGT"), k)) for _ in range(50)]
        codes, where = tokens.encode_kmer_strings(words + ["N" * k, "A" * (k - 1), "é" * k], k)
        assert where.tolist() == list(range(50))
        assert tokens.decode_kmers(codes, k).tolist() == words


def test_bad_sequences_raise_clear_errors():
    tok = KmerTokenizer(tokens.build_vocab(["ACGTACGTACGT"]), 12, 9, 16)
    longest = tokens.max_sequence_length(16, 12, 9)  # 14 k-mers + [CLS] + [SEP] = 16 tokens
    ids, n = tok.encode(["A" * longest])
    assert longest == 129 and n.tolist() == [16] and ids[0, -1] == tok.sep_id
    with pytest.raises(ValueError, match=r"'s2': 130 nt gives 15 k-mers .* 17 tokens .* max_length=16 .* 129 nt"):
        tok.encode(["ACGT", "A" * (longest + 1)], names=["s1", "s2"])
    with pytest.raises(ValueError, match=r"#1: invalid character 'a' at nt 3"):
        tok.encode(["ACGT", "ACaT"])
    with pytest.raises(ValueError, match=r"#0: empty sequence"):
        tok.encode([""])
    with pytest.raises(ValueError, match="stride"):
        KmerTokenizer(tokens.build_vocab([]), 4, 5)


def test_save_load_round_trip(tmp_path, spike):
    vocab = tokens.build_vocab(tokens.count_kmers([spike], 12, 9)["kmer"].tolist())
    tok = KmerTokenizer(vocab, 12, 9, 500)
    tok.save(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert (config["k"], config["stride"], config["max_length"], config["model_max_length"]) == (12, 9, 500, 500)
    back = KmerTokenizer.load(tmp_path / "tok")
    assert back.vocab == tok.vocab and (back.k, back.stride, back.max_length) == (12, 9, 500)
    assert (back.pad_id, back.unk_id, back.cls_id, back.sep_id, back.mask_id) == (0, 1, 2, 3, 4)
    assert len(back) == len(vocab) == 424 + 5
    np.testing.assert_array_equal(back.encode([spike])[0], tok.encode([spike])[0])
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == sorted(tokens.TOKENIZER_FILES)
    # transformers keeps the k-mer keys when it re-saves the tokenizer (e.g. beside a trained model)
    AutoTokenizer.from_pretrained(str(tmp_path / "tok")).save_pretrained(tmp_path / "resaved")
    assert KmerTokenizer.load(tmp_path / "resaved").vocab == tok.vocab
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        KmerTokenizer.load(tmp_path)


def write_wordpiece_vocab(directory, extra=()):
    """A tiny bert-base-cased-like vocab.txt: [PAD]=0, [unused*], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103."""
    words = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += ["the", "##s", "virus", *extra]
    directory.mkdir()
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    return {w: i for i, w in enumerate(words)}


def test_pretrained_mode_keeps_original_ids(tmp_path, spike):
    base = write_wordpiece_vocab(tmp_path / "base", extra=[spike[:12]])  # one k-mer already in the base
    vocab, specials = tokens.load_base_vocab(tmp_path / "base")
    assert vocab == base
    kmers = tokens.count_kmers([spike], 12, 9)["kmer"].tolist()
    extended = tokens.build_vocab(kmers, vocab)
    assert all(extended[w] == i for w, i in base.items())
    new_ids = sorted(i for w, i in extended.items() if w not in base)
    assert new_ids == list(range(len(base), len(base) + len(kmers) - 1))
    tok = KmerTokenizer(extended, 12, 9, 512, specials)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert len(tok) == len(base) + len(kmers) - 1
    tok.save(tmp_path / "tok")
    seqs = [spike, mutate(spike, np.random.default_rng(1), 20, 50)]
    ids, _ = tok.encode(seqs)
    np.testing.assert_array_equal(ids, hf_ids(tmp_path / "tok", [tok.kmer_text(s) for s in seqs], 512)[0])
    assert ids[0, 1] == base[spike[:12]] and ids[0, 0] == 101 and ids[0, 426] == 102 and ids[0, 427] == 0
    with pytest.raises(ValueError, match="model.pretrained="):
        tokens.load_base_vocab(tmp_path / "no-such-model")


def test_stratified_split_reproducible_disjoint_stratified():
    labels = np.repeat(np.arange(4), [50, 100, 30, 20])
    splits = tokens.stratified_split(labels, 0.2, 0.08, seed=42, classes=CLASSES)
    again = tokens.stratified_split(labels, 0.2, 0.08, seed=42, classes=CLASSES)
    other = tokens.stratified_split(labels, 0.2, 0.08, seed=7, classes=CLASSES)
    assert all(np.array_equal(splits[s], again[s]) for s in tokens.SPLITS)
    assert not np.array_equal(splits["test"], other["test"])
    union = np.concatenate([splits[s] for s in tokens.SPLITS])
    assert len(union) == len(labels) and set(union) == set(range(len(labels)))  # disjoint and complete
    assert len(splits["test"]) == 40 and len(splits["val"]) == 13  # ceil(0.2*200), ceil(0.08*160)
    # stratified: each class's test count is its share of the 40 (sklearn rounds to within 1)
    test_counts = np.bincount(labels[splits["test"]], minlength=4)
    assert np.abs(test_counts - np.array([50, 100, 30, 20]) * 0.2).max() <= 1


def test_split_guards_tiny_classes():
    with pytest.raises(ValueError, match=r"too few sequences .*: 'Mu' \(2\)$"):
        tokens.stratified_split(np.repeat(np.arange(4), [40, 40, 2, 40]), classes=CLASSES)
    with pytest.raises(ValueError, match="tokens.val_fraction=0.08"):
        tokens.stratified_split(np.repeat(np.arange(4), [5, 5, 5, 5]), classes=CLASSES)


def write_spike_parquet(path, spike, per_class=12, seed=0):
    """spike.parquet as docs/outputs.md: per class a fixed signature (substitutions, indel), plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, name in enumerate(CLASSES):
        signature = mutate(spike, np.random.default_rng(100 + label), 10)
        if label == 1:
            signature = signature[:600] + signature[606:]  # a 6-nt deletion: 424 k-mers
        if label == 2:
            signature = signature[:900] + "AAACCCGGG" + signature[900:]  # an insertion: 426 k-mers
        for i in range(per_class):
            seq = mutate(signature, rng, 3, 40 if i % 4 == 0 else 0)
            rows.append(dict(seq_id=f"synthetic-{name}-{i}", **{"class": name}, label=label, lineage=f"L{label}",
                             source="synthetic", sequence=seq, length=len(seq), n_fraction=seq.count("N") / len(seq),
                             qc="pass"))  # fmt: skip
    io.write_parquet(pd.DataFrame(rows), path)
    return pd.DataFrame(rows)


def run_stage(tmp_path, root, base=None, **cfg):
    out = tmp_path / "results" / "tokens"
    names = ["train", "val", "test", "kmer_counts", "token_map"]
    outputs = {name: str(out / f"{name}.parquet") for name in names}
    outputs.update({name: str(out / f"{name}.json") for name in ["tokenizer", "tokenizer_config", "special_tokens_map"]})
    token_cfg = dict(k=12, stride=9, max_length=512, min_count=1, test_fraction=0.2, val_fraction=0.15, split_seed=42)
    token_cfg.update(cfg)
    variants = str(root / "resources" / "variants.yaml")
    tokens.split_and_tokenize(tmp_path / "spike.parquet", variants, outputs, CLASSES, token_cfg, base)
    return out


def test_run_writes_outputs_as_documented(tmp_path, root, spike):
    table = write_spike_parquet(tmp_path / "spike.parquet", spike)
    out = run_stage(tmp_path, root)
    tok = KmerTokenizer.load(out)
    hf = AutoTokenizer.from_pretrained(str(out))
    assert len(hf) == len(tok)
    parts = {s: pq.read_table(out / f"{s}.parquet") for s in tokens.SPLITS}
    schema = parts["train"].schema
    assert schema.names == ["seq_id", "class", "label", "lineage", "input_ids", "n_tokens"]
    assert schema.field("input_ids").type == pa.list_(pa.int32(), 512)
    assert schema.field("label").type == pa.int16() and schema.field("n_tokens").type == pa.int32()
    assert io.read_metadata(out / "train.parquet")["vocab_size"] == len(tok)
    ids = {s: set(p.column("seq_id").to_pylist()) for s, p in parts.items()}
    assert sum(map(len, ids.values())) == len(table) and set.union(*ids.values()) == set(table["seq_id"])

    # ids and counts agree with encoding each sequence again; indels give 424/426 k-mers
    by_id = table.set_index("seq_id")
    test = parts["test"].to_pandas()
    again, n_again = tok.encode(by_id.loc[test["seq_id"], "sequence"].tolist())
    np.testing.assert_array_equal(io.to_matrix(parts["test"].column("input_ids")), again)
    np.testing.assert_array_equal(test["n_tokens"], n_again)
    assert set(pd.concat([p.to_pandas() for p in parts.values()]).groupby("class")["n_tokens"].first()) == {
        426, 427, 428
    }

    # the vocabulary holds the training k-mers and none seen only in val/test
    train_kmers = set(tokens.count_kmers(by_id.loc[sorted(ids["train"]), "sequence"].tolist(), 12, 9)["kmer"])
    held_out = set(tokens.count_kmers(by_id.loc[sorted(ids["val"] | ids["test"]), "sequence"].tolist(), 12, 9)["kmer"])
    assert held_out - train_kmers  # the check below is not vacuous
    kmer_vocab = {t for t in tok.vocab if t not in tokens.SPECIAL_TOKENS.values()}
    assert kmer_vocab == train_kmers and not (held_out - train_kmers) & kmer_vocab

    counts = pq.read_table(out / "kmer_counts.parquet").to_pandas()
    assert counts.columns.tolist() == ["kmer", "count", "in_vocab", "rank"]
    assert counts["in_vocab"].all() and counts["rank"].tolist() == list(range(1, len(counts) + 1))
    assert counts["count"].is_monotonic_decreasing and set(counts["kmer"]) == train_kmers
    tmap = pq.read_table(out / "token_map.parquet").to_pandas()
    assert len(tmap) == 512 and tmap.loc[106, "domains"].tolist() == ["RBD", "S1"]


def test_run_min_count_and_pretrained(tmp_path, root, spike):
    write_spike_parquet(tmp_path / "spike.parquet", spike)
    base = write_wordpiece_vocab(tmp_path / "base")
    out = run_stage(tmp_path, root, base=str(tmp_path / "base"), min_count=3)
    counts = pq.read_table(out / "kmer_counts.parquet").to_pandas()
    assert counts["in_vocab"].tolist() == (counts["count"] >= 3).tolist() and not counts["in_vocab"].all()
    tok = KmerTokenizer.load(out)
    assert all(tok.vocab[w] == i for w, i in base.items()) and tok.unk_id == 100
    assert len(tok) == len(base) + counts["in_vocab"].sum()
    # a failing split leaves no output behind
    write_spike_parquet(tmp_path / "spike.parquet", spike, per_class=2)
    for path in out.iterdir():
        path.unlink()
    with pytest.raises(ValueError, match="too few sequences"):
        run_stage(tmp_path, root)
    assert list(out.iterdir()) == []


def test_split_sizes_match_the_paper():
    # 49,403 sequences split 36,360 / 3,162 / 9,881 in the paper: test ceil(20%), val ceil(8% of the rest)
    labels = np.random.default_rng(0).integers(0, 8, 49_403)
    splits = tokens.stratified_split(labels, 0.2, 0.08, seed=42)
    assert [len(splits[s]) for s in tokens.SPLITS] == [36_360, 3_162, 9_881]
