"""`bertgeom predict`: whole genomes and bare spike genes from FASTA, through the same spike
extraction and tokenization as the training data, into the model; unusable records reported;
open-set answers, streaming, exit codes; the hand-off (AutoTokenizer on raw spikes, model card)."""

import gzip
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from snakemake.utils import validate

from bertgeom import io
from bertgeom.cli import main
from bertgeom.data.download import synthetic_genomes
from bertgeom.data.fasta import read_records, write_fasta
from bertgeom.data.outofclass import background_genomes, calibration_genomes, control_sequences
from bertgeom.data.outofclass import out_of_class_genomes
from bertgeom.config import load_config
from bertgeom.genome_sets import tokenized_set
from bertgeom.data.spike import SpikeExtractor
from bertgeom.handoff import write_model_card
from bertgeom.model import load_model, predict_probs
from bertgeom.openset import OpenSet
from bertgeom.openset_stage import evaluate_open_set, fit_open_set
from bertgeom.predict import Predictor
from bertgeom.tokens import KmerTokenizer, build_vocab, count_kmers, split_table
from bertgeom.train import train_seed

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "resources" / "NC_045512.2.fasta"
VARIANTS = ROOT / "resources" / "variants.yaml"
CLASSES = ["Alpha", "Delta"]
DEFAULTS = load_config()
QUIET = {**DEFAULTS["data"]["synthetic"], **dict(per_class=4, n_runs_mean=0.0, trim_5p_max=50, trim_3p_max=50)}
HARD = {**DEFAULTS["open_set"]["calibration"], "per_class": 8}


def write_set(records, extractor, tokenizer, path, kind="evaluation"):
    """A genome set as a tokens parquet (bertgeom.genome_sets)."""
    io.write_parquet(tokenized_set(records, extractor, tokenizer, kind), path)
    return path


def predict_records(records, model_dir, batch_size=32, device="cpu") -> pd.DataFrame:
    """The rows of `bertgeom predict` for (id, sequence) records, as a table."""
    from bertgeom.data.fasta import parse_records

    text = "".join(f">{i}\n{s}\n" for i, s in records).splitlines(keepends=True)
    rows = Predictor(model_dir, device=device).rows(parse_records(text, "records", strip_gaps=True), batch_size)
    return pd.DataFrame(list(rows))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained on synthetic Alpha and Delta spikes (k = 12, stride 9, 427 tokens);
    returns (model directory, held-out genomes as (id, sequence, class))."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("predict")
    config = {
        "classes": CLASSES,
        "data": {"synthetic": {"per_class": 16, "n_runs_mean": 0}},
        "model": {"preset": "tiny"},
        "train": {"epochs": 8, "batch_size": 4, "lr": 1e-2},
    }
    validate(config, str(ROOT / "config" / "config.schema.yaml"))
    genomes = list(synthetic_genomes(CLASSES, REFERENCE, VARIANTS, config["data"]["synthetic"], seed=0))
    extractor = SpikeExtractor(REFERENCE)
    spikes = pd.DataFrame(
        [
            (seq_id, f["class"], CLASSES.index(f["class"]), f["lineage"], extractor.extract(seq_id, seq).sequence)
            for seq_id, seq, f in genomes
        ],
        columns=["seq_id", "class", "label", "lineage", "sequence"],
    )
    index = spikes.groupby("label").cumcount()  # 0..15 within each class
    parts = {"train": spikes[index < 12], "val": spikes[(index >= 12) & (index < 14)]}
    counts = count_kmers(parts["train"]["sequence"].tolist(), 12, 9)
    tokenizer = KmerTokenizer(build_vocab(counts["kmer"].tolist()), 12, 9, 512)
    tokenizer.save(root / "tokens")
    for name, part in parts.items():
        ids, n_tokens = tokenizer.encode(part["sequence"].tolist())
        io.write_parquet(split_table(part, ids, n_tokens), root / "tokens" / f"{name}.parquet")
    tokens = root / "tokens"
    background = background_genomes(REFERENCE, VARIANTS, CLASSES, QUIET, 0, 24, keep_max=0.3)
    write_set(background, extractor, tokenizer, tokens / "background.parquet", "background")
    train_seed(
        tokens / "train.parquet", tokens / "val.parquet", tokens, root / "model", root / "ckpt",
        config["classes"], config["model"], config["train"], 0, background=tokens / "background.parquet",
    )  # fmt: skip
    held_out = [(seq_id, seq, f["class"]) for (seq_id, seq, f), i in zip(genomes, index) if i >= 14]
    sets = {
        "threshold": out_of_class_genomes(REFERENCE, VARIANTS, CLASSES, "threshold", QUIET, 0),
        "fresh": [],
        "calibration": calibration_genomes(REFERENCE, VARIANTS, CLASSES, QUIET, 0, hard=HARD),
    }
    paths = {name: write_set(records, extractor, tokenizer, tokens / f"{name}.parquet", name) for name, records in sets.items()}
    fit_open_set(
        root / "model", tokens / "train.parquet", tokens / "val.parquet", **paths,
        open_set_out=root / "model" / "open_set.json", tensors_out=root / "model" / "open_set.safetensors",
        max_false_unassigned=0.0,
    )  # fmt: skip
    return root / "model", held_out


def test_predict_genomes_and_spikes(trained, tmp_path):
    model_dir, held_out = trained
    genome_id, genome, genome_class = held_out[0]
    spike = SpikeExtractor(REFERENCE).extract(genome_id, genome).sequence
    junk = "".join(np.random.default_rng(0).choice(list("ACGT"), 3000))
    masked = genome[:21600] + "N" * 2000 + genome[23600:]  # 52% of the spike is N
    aligned = genome[:100] + "---" + genome[100:25000] + "-" * 7 + genome[25000:]
    records = [(i, s) for i, s, _ in held_out] + [("bare-spike", spike.lower()), ("junk", junk), ("masked", masked)]
    records += [("aligned", aligned), ("bad", "ACGTXXACGT")]
    table = predict_records(records, model_dir, batch_size=3)

    assert table["seq_id"].tolist() == [r[0] for r in records]
    by_id = table.set_index("seq_id")
    assert by_id.loc[["junk", "masked", "bad"], "reason"].tolist() == ["missing_spike", "too_many_n", "invalid_record"]
    assert "outside the IUPAC nucleotide codes" in by_id.loc["bad", "detail"]
    ok = table[table["status"] == "pass"]
    assert len(ok) == len(held_out) + 2 and (table.loc[table["status"] != "pass", "prediction"] == "").all()
    # The trained model separates the two lineages; a bare spike and an aligned genome come out as the genome.
    assert ok["closest_class"].tolist() == [c for _, _, c in held_out] + [genome_class] * 2
    assert set(ok["prediction"]) <= set(CLASSES) | {"unassigned"}
    assert by_id.loc["aligned", "gaps_removed"] == 10 and by_id.loc[genome_id, "gaps_removed"] == 0
    for column in ("probability", "ood_score", *(f"prob_{c}" for c in CLASSES)):
        assert by_id.loc["bare-spike", column] == pytest.approx(by_id.loc[genome_id, column], abs=1e-6)
    # QC numbers on every passing row: length, N share, strand, [UNK] share
    assert (ok["length"] == ok["length"].astype(int)).all() and ok["length"].between(3700, 3900).all()
    assert (
        ok["n_fraction"].between(0, 0.05).all() and (ok["strand"] == 1).all() and ok["unk_fraction"].between(0, 1).all()
    )
    assert by_id.loc["masked", "n_fraction"] > 0.5 and by_id.loc["masked", "length"] > 3000

    # Same numbers as the pipeline by hand: extraction, the model's tokenizer, the model, the temperature.
    open_set = OpenSet.load(model_dir / "open_set.json")
    tokenizer = KmerTokenizer.load(model_dir)
    ids, n_tokens = tokenizer.encode([spike])
    model = load_model(model_dir)
    logits = model(input_ids=torch.from_numpy(ids).long(), attention_mask=(torch.from_numpy(ids) != 0).long()).logits
    probs = torch.softmax(logits.detach().double() / open_set.temperature, -1)[0].numpy()
    np.testing.assert_allclose(
        by_id.loc["bare-spike", [f"prob_{c}" for c in CLASSES]].to_numpy(float), probs, atol=1e-6
    )
    np.testing.assert_allclose(ok[[f"prob_{c}" for c in CLASSES]].sum(axis=1), 1.0, atol=1e-6)


def test_reference_and_random_sequences_are_unassigned(trained, tmp_path):
    """Sequences of no class: the reference genome (a genome and its bare spike), random sequences."""
    model_dir, held_out = trained
    controls = [(i, s) for i, s, _ in control_sequences(REFERENCE, 3, seed=0)]
    reference = controls[0][1]
    records = controls + [("reference-spike", reference[21562:25384])]
    table = predict_records(records, model_dir).set_index("seq_id")
    assert table.loc[["control-reference", "reference-spike"], "prediction"].tolist() == ["unassigned"] * 2
    # random and shuffled sequences never reach the model through QC; scored as they are, they are far out
    open_set = OpenSet.load(model_dir / "open_set.json")
    tokens = model_dir.parent / "tokens"
    controls = write_set(
        control_sequences(REFERENCE, 5, seed=1), SpikeExtractor(REFERENCE), KmerTokenizer.load(tokens), tmp_path / "c.parquet"
    )
    table, summary, calibration = evaluate_open_set(
        model_dir, model_dir / "open_set.json", None, tokens / "val.parquet", controls, tokens / "calibration.parquet"
    )
    summary = summary.set_index("type")
    assert len(table) == 4 + 11 and summary.loc["test (in class)", "n"] == 4
    assert sum(row["n"] for row in calibration["test"]["reliability_after"]) == 4
    assert calibration["calibration_check"]["n"] == len(pq.read_table(tokens / "calibration.parquet")) // 2
    assert summary.loc[["random", "shuffled", "reference"], "unassigned"].tolist() == [1.0, 1.0, 1.0]
    assert summary.loc["random", "auroc"] == 1.0 and open_set.threshold > 0


def test_open_set_file_round_trips_with_the_model(trained, tmp_path):
    model_dir, _ = trained
    saved = json.loads((model_dir / "open_set.json").read_text())
    open_set = OpenSet.load(model_dir / "open_set.json")
    from safetensors.numpy import load_file

    assert open_set.classes == CLASSES and saved["threshold"] == open_set.threshold
    assert np.array_equal(load_file(str(model_dir / saved["tensors"]))["precision"], open_set.precision)
    assert open_set.means.shape == (2, 2, 32)  # tiny preset: [layer, class, hidden]
    assert 0 < open_set.temperature < 100 and {"youden_j", "calibration"} <= set(open_set.report)
    assert Predictor(model_dir, device="cpu").open_set.threshold == open_set.threshold


def _fasta(path, records, gz=False):
    opener = gzip.open if gz else open
    with opener(path, "wt") as handle:
        for seq_id, seq in records:
            handle.write(f">{seq_id}\n{seq}\n")
    return path


def test_streaming_predict_uses_constant_memory(trained, tmp_path):
    """Python memory at its peak while predicting 10x more records stays the same (no list of records,
    rows or sequences grows with the file): measured with tracemalloc (numpy arrays included)."""
    model_dir, held_out = trained
    spike = SpikeExtractor(REFERENCE).extract(held_out[0][0], held_out[0][1]).sequence
    predictor = Predictor(model_dir, device="cpu")
    peaks = []
    for n in (12, 120):
        path = _fasta(tmp_path / f"{n}.fasta", [(f"s{i}", spike) for i in range(n)])
        tracemalloc.start()
        count = sum(1 for _ in predictor.rows(read_records(path), batch_size=4))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert count == n
    held = 108 * len(spike)  # what keeping the extra sequences alone would cost
    assert peaks[1] - peaks[0] < held / 4, peaks


def test_cli_exit_codes_and_output(trained, tmp_path, capsys):
    model_dir, held_out = trained
    fasta = _fasta(tmp_path / "in.fasta.gz", [(i, s) for i, s, _ in held_out[:2]] + [("junk", "ACGT" * 400)], gz=True)
    out = tmp_path / "out.tsv"
    args = ["predict", "--model", str(model_dir), "--fasta", str(fasta), "--out", str(out), "--device", "cpu"]
    assert main(args) == 0  # a rejected record is a row, not a failure
    printed = capsys.readouterr()
    assert held_out[0][0] in printed.out and "missing_spike" in printed.out
    assert "record 'junk': no usable spike (missing_spike" in printed.err
    assert "bertgeom predict: 3 records in" in printed.err and "1 rejected (missing_spike 1)" in printed.err
    saved = pd.read_csv(out, sep="\t", keep_default_na=False)
    assert saved["seq_id"].tolist() == [held_out[0][0], held_out[1][0], "junk"]
    assert saved["status"].tolist() == ["pass", "pass", "reject"]
    assert {"prediction", "probability", "ood_score", "closest_class", "unk_fraction", "gaps_removed"} <= set(saved)
    assert oct(os.stat(out).st_mode & 0o777) == "0o644"

    assert main(["predict", "--model", str(tmp_path / "none"), "--fasta", str(fasta)]) == 2
    assert "not a trained model directory" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_dir), "--fasta", str(tmp_path / "missing.fasta")]) == 1
    assert "FASTA file not found" in capsys.readouterr().err
    (tmp_path / "text.fasta").write_text("this is not FASTA\n")
    assert main(["predict", "--model", str(model_dir), "--fasta", str(tmp_path / "text.fasta"), "--out", str(out)]) == 1
    assert "not FASTA" in capsys.readouterr().err and len(pd.read_csv(out, sep="\t")) == 3  # --out untouched
    with pytest.raises(SystemExit) as usage:
        main(["predict", "--fasta", str(fasta)])
    assert usage.value.code == 2
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    assert "exit status:" in text and "examples:" in text and "unassigned" in text


def test_autotokenizer_gives_the_kmer_ids_on_raw_spikes(trained):
    from transformers import AutoTokenizer

    model_dir, held_out = trained
    extractor = SpikeExtractor(REFERENCE)
    spikes = [extractor.extract(i, s).sequence for i, s, _ in held_out]
    spikes += ["ACGTN" * 300, spikes[0][:-2] + "RY"]
    hf = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=True)
    ids, n_tokens = KmerTokenizer.load(model_dir).encode(spikes)
    encoded = hf(spikes, padding="max_length", max_length=512)
    assert np.array_equal(np.array(encoded["input_ids"]), ids)
    assert np.array_equal(np.array(encoded["attention_mask"]).sum(1), n_tokens)
    assert hf(spikes[0].lower().replace("T", "U"))["input_ids"] == ids[0][: n_tokens[0]].tolist()
    with pytest.raises(ValueError, match="outside the IUPAC codes"):
        hf("ACGT-ACGT")
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in model_dir.iterdir() if p.is_file())


def test_model_card(trained, tmp_path):
    model_dir, _ = trained
    metrics = {
        "accuracy": 1.0,
        "macro_f1": 1.0,
        "per_class": {c: {"precision": 1.0, "recall": 0.5, "f1": 0.6, "support": 2} for c in CLASSES},
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    write_model_card(
        model_dir / "training_info.json", tmp_path / "metrics.json", tmp_path / "README.md", model_dir / "open_set.json"
    )
    card = (tmp_path / "README.md").read_text()
    threshold = OpenSet.load(model_dir / "open_set.json").threshold
    assert f"| Alpha | 100.0% | 50.0% | 60.0% | 2 |" in card and f"{threshold:.3f}" in card
    assert "trust_remote_code=True" in card and "Intended use and limits" in card and "0 Alpha, 1 Delta" in card
