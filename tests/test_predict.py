"""`bertgeom predict`: whole genomes and bare spike genes from FASTA, through the same spike
extraction and tokenization as the training data, into the model; unusable records reported."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from snakemake.utils import validate
from test_train import fit_config

from bertgeom import io
from bertgeom.cli import main, predict_records
from bertgeom.data.download import synthetic_genomes
from bertgeom.data.fasta import write_fasta
from bertgeom.data.spike import SpikeExtractor
from bertgeom.model import load_model, predict_probs
from bertgeom.tokens import KmerTokenizer, build_vocab, count_kmers, split_table

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "resources" / "NC_045512.2.fasta"
VARIANTS = ROOT / "resources" / "variants.yaml"
CLASSES = ["Alpha", "Delta"]


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
    fit_config(config, 0, root / "tokens", root / "model", root / "ckpt")
    held_out = [(seq_id, seq, f["class"]) for (seq_id, seq, f), i in zip(genomes, index) if i >= 14]
    return root / "model", held_out


def test_predict_genomes_and_spikes(trained, tmp_path):
    model_dir, held_out = trained
    genome_id, genome, genome_class = held_out[0]
    spike = SpikeExtractor(REFERENCE).extract(genome_id, genome).sequence
    junk = "".join(np.random.default_rng(0).choice(list("ACGT"), 3000))
    masked = genome[:21600] + "N" * 2000 + genome[23600:]  # 52% of the spike is N
    records = [(i, s) for i, s, _ in held_out] + [("bare-spike", spike.lower()), ("junk", junk), ("masked", masked)]
    table = predict_records(records, model_dir, batch_size=3, device="cpu")

    assert table["seq_id"].tolist() == [r[0] for r in records]
    assert table.set_index("seq_id").loc[["junk", "masked"], "reason"].tolist() == ["missing_spike", "too_many_n"]
    ok = table[table["status"] == "pass"]
    assert len(ok) == len(held_out) + 1 and (table.loc[table["status"] != "pass", "prediction"] == "").all()
    # The trained model separates the two lineages; a bare spike is classified as its genome.
    assert ok["prediction"].tolist() == [c for _, _, c in held_out] + [genome_class]
    assert ok.loc[ok["seq_id"] == "bare-spike", "probability"].item() == pytest.approx(
        ok["probability"].iloc[0], abs=1e-6
    )

    # Same numbers as the pipeline by hand: extraction, the model's tokenizer, the model.
    tokenizer = KmerTokenizer.load(model_dir)
    ids, n_tokens = tokenizer.encode([spike])
    probs = predict_probs(load_model(model_dir), torch.from_numpy(ids), torch.from_numpy(n_tokens).long())[0].numpy()
    row = ok[ok["seq_id"] == "bare-spike"]
    np.testing.assert_allclose(row[[f"prob_{c}" for c in CLASSES]].to_numpy()[0], probs, atol=1e-6)
    np.testing.assert_allclose(ok[[f"prob_{c}" for c in CLASSES]].sum(axis=1), 1.0, atol=1e-5)


def test_cli(trained, tmp_path, capsys):
    model_dir, held_out = trained
    fasta = tmp_path / "in.fasta"
    write_fasta(fasta, [(i, s) for i, s, _ in held_out[:2]] + [("junk", "ACGT" * 400)])
    out = tmp_path / "out.tsv"
    assert (
        main(["predict", "--model", str(model_dir), "--fasta", str(fasta), "--out", str(out), "--device", "cpu"]) == 1
    )
    printed = capsys.readouterr()
    assert held_out[0][0] in printed.out and held_out[0][2] in printed.out
    assert "record 'junk': no usable spike (missing_spike" in printed.err
    saved = pd.read_csv(out, sep="\t", keep_default_na=False)
    assert saved["seq_id"].tolist() == [held_out[0][0], held_out[1][0], "junk"]
    assert saved["status"].tolist() == ["pass", "pass", "reject"]

    write_fasta(fasta, [(i, s) for i, s, _ in held_out[:1]])
    assert main(["predict", "--model", str(model_dir), "--fasta", str(fasta), "--device", "cpu"]) == 0
    assert main(["predict", "--model", str(tmp_path / "none"), "--fasta", str(fasta)]) == 2
    assert "not a trained model directory" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_dir), "--fasta", str(tmp_path / "missing.fasta")]) == 2
    assert "FASTA file not found" in capsys.readouterr().err
