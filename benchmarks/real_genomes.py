"""Real SARS-CoV-2 genomes for measuring `predict` (a measurement, never training data): build the vendored set, measure a model on it.

    .venv/bin/python benchmarks/real_genomes.py measure --model results/models/seed0 [results/models/seed1 ...]
    .venv/bin/python benchmarks/real_genomes.py build --out resources/real_genomes \\
        --ncov-fasta example_sequences.fasta.gz --ncov-metadata example_metadata.tsv \\
        --labelled-fasta sequences.fasta --accessions-only

`measure` classifies resources/real_genomes/genomes.fasta.gz (or --fasta/--labels) with each model
(bertgeom.predict, the code path of `bertgeom predict`) and prints, per class, the share correct and the
calls; for the genomes outside the classes the share `unassigned`; the median calibrated probability of
right and of wrong calls; and writes every row to benchmarks/out/real_<model>.tsv.

`build` made the vendored set (resources/real_genomes/README.md says from which files and commits):
- `--ncov-fasta/--ncov-metadata` (Nextstrain ncov example data, GenBank genomes): every genome sampled
  before 2020-09-01 is `outside` the classes (the earliest of them, Alpha, was first sampled in
  September 2020; the others later);
- `--labelled-fasta` genomes (with --accessions-only: only records named by an INSDC accession): a
  constellation rule like scorpio's, on nucleotides. Each genome is aligned to NC_045512.2 (minimap2,
  cs tags) and, for every class, the share of the substitutions of its first variants.yaml profile (the
  parent lineage) that the genome carries is counted over the profile positions the alignment covers.
  The class is the one with share >= 0.8 (if exactly one); `outside` when every share is < 0.4;
  otherwise the genome is left out as ambiguous. This uses the same consensus lists as the generator,
  so it checks the classifier against the lineages' defining mutations, not against an independent
  lineage call (pangolin / Nextclade would be one).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import re
from pathlib import Path

import pandas as pd

from bertgeom.data.fasta import read_records
from bertgeom.data.variants import load_variants, read_reference

ROOT = Path(__file__).resolve().parents[1]
VENDORED = ROOT / "resources" / "real_genomes"
_CS = re.compile(r"(:\d+|\*[a-z][a-z]|[+-][a-z]+|~[a-z]{2}\d+[a-z]{2})")
_ACCESSION = re.compile(r"^[A-Z]{1,2}\d{5,6}(\.\d+)?$")  # INSDC nucleotide accession (GenBank, ENA, DDBJ)
OUTSIDE = "outside"


def substitutions(aligner, sequence: str) -> tuple[set[tuple[int, str]], list[tuple[int, int]]]:
    """{(1-based reference position, alt base)} and the covered reference intervals (0-based, half-open)."""
    subs, covered = set(), []
    for hit in aligner.map(sequence, cs=True):
        if not hit.is_primary or hit.strand != 1:
            continue
        pos = hit.r_st
        covered.append((hit.r_st, hit.r_en))
        for op in _CS.findall(hit.cs):
            if op[0] == ":":
                pos += int(op[1:])
            elif op[0] == "*":
                if op[2] != "n":
                    subs.add((pos + 1, op[2].upper()))
                pos += 1
            elif op[0] == "-":
                pos += len(op) - 1
    return subs, covered


def label(subs, covered, profiles: dict[str, list[tuple[int, str]]]) -> tuple[str, dict]:
    """(class, `outside` or "" for ambiguous; the share of each class profile's substitutions carried)."""
    shares = {}
    for name, sites in profiles.items():
        seen = [s for s in sites if any(a <= s[0] - 1 < b for a, b in covered)]
        shares[name] = sum(s in subs for s in seen) / len(seen) if seen else 0.0
    high = [name for name, share in shares.items() if share >= 0.8]
    if len(high) == 1:
        return high[0], shares
    return (OUTSIDE if max(shares.values()) < 0.4 else ""), shares


def build(args) -> None:
    import mappy

    reference = read_reference(ROOT / "resources/NC_045512.2.fasta")
    variants = load_variants(ROOT / "resources/variants.yaml")
    profiles = {
        c["name"]: [(int(s[1:-1]), s[-1]) for s in c["profiles"][0]["substitutions"]] for c in variants["classes"]
    }
    records, rows = [], []
    if args.ncov_fasta:
        with open(args.ncov_metadata) as handle:
            meta = {r["strain"]: r for r in csv.DictReader(handle, delimiter="\t")}
        for rec in read_records(args.ncov_fasta):
            row = meta.get(rec.seq_id)
            if not rec.problem and row and row["date"] < "2020-09-01":
                records.append((rec.seq_id, rec.sequence))
                rows.append((rec.seq_id, row["genbank_accession"], OUTSIDE, f"ncov example, sampled {row['date']}"))
    aligner = mappy.Aligner(seq=reference, preset="asm20")
    for path in args.labelled_fasta:
        for rec in read_records(path):
            if rec.problem or (args.accessions_only and not _ACCESSION.match(rec.seq_id)):
                continue
            name, shares = label(*substitutions(aligner, rec.sequence), profiles)
            top = max(shares, key=shares.get)
            if name:
                records.append((rec.seq_id, rec.sequence))
                rows.append((rec.seq_id, rec.seq_id, name, f"{Path(path).name}: constellation share {top} {shares[top]:.2f}"))
            else:
                print(f"ambiguous, left out: {rec.seq_id} (best {top} {shares[top]:.2f})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(out / "genomes.fasta.gz", "wb", compresslevel=9, mtime=0) as handle:  # reproducible bytes
        handle.write("".join(f">{seq_id}\n{seq}\n" for seq_id, seq in records).encode("ascii"))
    with open(out / "labels.tsv", "w") as handle:
        handle.write("seq_id\taccession\tclass\thow\n" + "".join("\t".join(r) + "\n" for r in rows))
    print(f"{len(rows)} labelled genomes: {pd.Series([r[2] for r in rows]).value_counts().to_dict()}")


def measure_model(model_dir: Path, fasta: Path, labels: pd.Series, batch_size: int) -> pd.DataFrame:
    """Predict every labelled genome; print the per-class and outside numbers; return the rows."""
    from bertgeom.predict import Predictor

    rows = pd.DataFrame(Predictor(model_dir, device="cpu").rows(read_records(fasta, strip_gaps=True), batch_size))
    rows = rows[rows["seq_id"].isin(labels.index)].assign(truth=lambda f: labels[f["seq_id"]].to_numpy())
    print(f"{model_dir}: {len(rows)} labelled genomes, status {rows['status'].value_counts().to_dict()}")
    ok = rows[rows["status"] == "pass"]
    right = ok["prediction"] == ok["truth"]
    for truth, part in ok.groupby("truth"):
        calls = part["prediction"].value_counts().to_dict()
        if truth == OUTSIDE:
            print(f"  outside the classes: {len(part)}, unassigned {(part['prediction'] == 'unassigned').mean():.3f}, calls {calls}")
        else:
            print(f"  {truth}: {len(part)}, correct {(part['prediction'] == truth).mean():.3f}, calls {calls}")
    median = lambda mask: ok.loc[mask, "probability"].median() if mask.any() else float("nan")  # noqa: E731
    print(f"  median calibrated probability of right calls {median(right):.3f}, of wrong calls {median(~right):.3f}")
    return rows


def measure(args) -> None:
    labels = pd.read_csv(args.labels, sep="\t", dtype=str, keep_default_na=False).set_index("seq_id")["class"]
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    for model_dir in map(Path, args.model):
        rows = measure_model(model_dir, Path(args.fasta), labels, args.batch_size)
        rows.to_csv(out / f"real_{model_dir.name}.tsv", sep="\t", index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = ap.add_subparsers(dest="command", required=True)
    made = commands.add_parser("build", help="make the labelled set from the public files")
    made.add_argument("--out", required=True)
    made.add_argument("--ncov-fasta")
    made.add_argument("--ncov-metadata")
    made.add_argument("--labelled-fasta", action="append", default=[])
    made.add_argument("--accessions-only", action="store_true", help="only records named by an INSDC accession")
    made.set_defaults(func=build)
    run = commands.add_parser("measure", help="predict the labelled set with trained models")
    run.add_argument("--model", nargs="+", required=True, help="model directories (results/models/seed{seed})")
    run.add_argument("--fasta", default=str(VENDORED / "genomes.fasta.gz"))
    run.add_argument("--labels", default=str(VENDORED / "labels.tsv"))
    run.add_argument("--batch-size", type=int, default=32)
    run.set_defaults(func=measure)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
