"""Build a labelled set of real SARS-CoV-2 genomes for measuring `predict` (a measurement, never training data).

    .venv/bin/python benchmarks/real_genomes.py --out benchmarks/out/real \\
        --ncov-fasta example_sequences.fasta.gz --ncov-metadata example_metadata.tsv \\
        --labelled-fasta sequences.fasta [--labelled-fasta EPI_ISL_601443.fasta ...]

Writes real.fasta and labels.tsv (seq_id, class, how) under --out. Nothing here is vendored: the
inputs are public files named in README ("Predict", real genomes), given by path.

Labels:
- `--ncov-fasta/--ncov-metadata` (Nextstrain ncov example data, GenBank genomes): every genome sampled
  before 2020-09-01 is `outside` the classes (the earliest of them, Alpha, was first sampled in
  September 2020; the others later);
- `--labelled-fasta` genomes: a constellation rule like scorpio's, on nucleotides. Each genome is
  aligned to NC_045512.2 (minimap2, cs tags) and, for every class, the share of the substitutions of
  its first variants.yaml profile (the parent lineage) that the genome carries is counted, over the
  profile positions the genome covers (not N). The class is the one with share >= 0.8 (if exactly one);
  `outside` when every share is < 0.4; otherwise the genome is left out as ambiguous. This uses the
  same consensus lists as the generator, so it is a check of the classifier against the lineage's
  defining mutations, not an independent lineage call (pangolin / Nextclade would be).
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import mappy

from bertgeom.data.fasta import read_records, write_fasta
from bertgeom.data.variants import load_variants, read_reference

ROOT = Path(__file__).resolve().parents[1]
_CS = re.compile(r"(:\d+|\*[a-z][a-z]|[+-][a-z]+|~[a-z]{2}\d+[a-z]{2})")


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


def label(subs, covered, sequence_ok, profiles: dict[str, list[tuple[int, str]]]) -> tuple[str, dict]:
    shares = {}
    for name, sites in profiles.items():
        seen = [s for s in sites if any(a <= s[0] - 1 < b for a, b in covered) and sequence_ok(s[0])]
        shares[name] = sum(s in subs for s in seen) / len(seen) if seen else 0.0
    high = [name for name, share in shares.items() if share >= 0.8]
    if len(high) == 1:
        return high[0], shares
    return ("outside" if max(shares.values()) < 0.4 else ""), shares


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--ncov-fasta")
    ap.add_argument("--ncov-metadata")
    ap.add_argument("--labelled-fasta", action="append", default=[])
    args = ap.parse_args()
    reference = read_reference(ROOT / "resources/NC_045512.2.fasta")
    variants = load_variants(ROOT / "resources/variants.yaml")
    profiles = {
        c["name"]: [(int(s[1:-1]), s[-1]) for s in c["profiles"][0]["substitutions"]] for c in variants["classes"]
    }
    records, rows = [], []
    if args.ncov_fasta:
        with open(args.ncov_metadata) as handle:
            dates = {r["strain"]: r["date"] for r in csv.DictReader(handle, delimiter="\t")}
        for rec in read_records(args.ncov_fasta):
            if not rec.problem and dates.get(rec.seq_id, "9999") < "2020-09-01":
                records.append((rec.seq_id, rec.sequence))
                rows.append((rec.seq_id, "outside", f"ncov example, sampled {dates[rec.seq_id]}"))
    aligner = mappy.Aligner(seq=reference, preset="asm20")
    for path in args.labelled_fasta:
        for rec in read_records(path):
            if rec.problem:
                continue
            subs, covered = substitutions(aligner, rec.sequence)
            name, shares = label(subs, covered, lambda pos: True, profiles)
            top = max(shares, key=shares.get)
            if name:
                records.append((rec.seq_id, rec.sequence))
                rows.append((rec.seq_id, name, f"{Path(path).name}: constellation share {top} {shares[top]:.2f}"))
            else:
                print(f"ambiguous, left out: {rec.seq_id} (best {top} {shares[top]:.2f})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_fasta(out / "real.fasta", records)
    with open(out / "labels.tsv", "w") as handle:
        handle.write("seq_id\tclass\thow\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows))
    counts = {}
    for _, name, _ in rows:
        counts[name] = counts.get(name, 0) + 1
    print(f"{len(rows)} labelled genomes: {counts}")


if __name__ == "__main__":
    main()
