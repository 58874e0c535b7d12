"""Fit and measure the open set and the calibration of trained models (until the open_set rule exists).

    .venv/bin/python benchmarks/measure_open_set.py --seeds 0 1 2          # after `snakemake ... results/eval/seed*/metrics.json`
    .venv/bin/python benchmarks/measure_open_set.py --seeds 0 --real real.fasta --labels real.tsv

Per seed: writes results/models/seed{seed}/open_set.json (bertgeom.openset_stage.fit_open_set) and
prints the per-type table of evaluate_open_set (test split, the `evaluation` out-of-class lineages,
the reference, shuffled spikes, random sequences) and the calibration numbers. --real with --labels
(TSV: seq_id, class, where class is a class name or `outside`) also classifies real genomes with
`bertgeom.predict` and prints per-class accuracy and the unassigned share of the `outside` ones.
Tables go to benchmarks/out/open_set_seed{seed}.tsv.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd
import torch

from bertgeom.config import load_config
from bertgeom.data.fasta import read_records
from bertgeom.data.outofclass import calibration_genomes, control_sequences, out_of_class_genomes
from bertgeom.openset_stage import evaluate_open_set, fit_open_set
from bertgeom.predict import Predictor

ROOT = Path(__file__).resolve().parents[1]


def measure_seed(seed: int, args, config: dict) -> None:
    model_dir = Path(args.results) / "models" / f"seed{seed}"
    tokens = Path(args.results) / "tokens"
    classes, data = config["classes"], config["data"]
    reference, variants = ROOT / data["reference"], ROOT / data["variants"]
    settings = {**data["synthetic"], "per_class": args.per_lineage}
    qc = {k: v for k, v in config["qc"].items() if k != "drop_duplicates"}
    threshold = out_of_class_genomes(reference, variants, classes, "threshold", settings, data["seed"])
    calibration = calibration_genomes(
        reference, variants, classes, {**settings, "per_class": args.calibration}, data["seed"]
    )
    fresh = calibration_genomes(reference, variants, classes, settings, data["seed"], hard=False)
    open_set = fit_open_set(
        model_dir,
        tokens / "train.parquet",
        tokens / "val.parquet",
        threshold,
        calibration,
        reference,
        qc=qc,
        in_class_records=fresh,
        max_false_unassigned=args.max_false_unassigned,
    )
    print(f"seed {seed}: threshold {open_set.threshold:.3f}, temperature {open_set.temperature:.3f}")
    print("  threshold fit:", {k: v for k, v in open_set.report.items() if k != "calibration"})
    print("  calibration (held-out half of the hard calibration genomes):", open_set.report["calibration"])
    records = list(out_of_class_genomes(reference, variants, classes, "evaluation", settings, data["seed"]))
    records += list(control_sequences(reference, args.controls, data["seed"]))
    table, summary, calibration = evaluate_open_set(model_dir, tokens / "test.parquet", records, reference, qc=qc)
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / f"open_set_seed{seed}.tsv", sep="\t", index=False)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("  test split calibration:", {k: v for k, v in calibration.items() if not k.startswith("reliability")})
    if args.real:
        measure_real(model_dir, args)


def measure_real(model_dir: Path, args) -> None:
    labels = pd.read_csv(args.labels, sep="\t", dtype=str).set_index("seq_id")["class"]
    rows = pd.DataFrame(Predictor(model_dir, device="cpu").rows(read_records(args.real), 32))
    rows = rows[rows["seq_id"].isin(labels.index)].assign(truth=lambda f: labels[f["seq_id"]].to_numpy())
    print(f"real genomes ({args.real}): {len(rows)} labelled, status {rows['status'].value_counts().to_dict()}")
    ok = rows[rows["status"] == "pass"]
    for truth, part in ok.groupby("truth"):
        if truth == "outside":
            print(
                f"  outside the classes: {len(part)}, unassigned {(part['prediction'] == 'unassigned').mean():.3f}, "
                f"calls {part['prediction'].value_counts().to_dict()}"
            )
        else:
            right = part["prediction"] == truth
            print(
                f"  {truth}: {len(part)}, correct {right.mean():.3f}, calls {part['prediction'].value_counts().to_dict()}, "
                f"probability right {part.loc[right, 'probability'].median():.3f} / wrong "
                f"{part.loc[~right, 'probability'].median() if (~right).any() else float('nan'):.3f} (medians)"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    ap.add_argument("--results", default="results")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--per-lineage", type=int, default=30, help="synthetic genomes per out-of-class lineage")
    ap.add_argument("--calibration", type=int, default=100, help="hard calibration genomes per class")
    ap.add_argument("--controls", type=int, default=30, help="shuffled spikes and random sequences each")
    ap.add_argument("--max-false-unassigned", type=float, default=0.01)
    ap.add_argument("--real", help="FASTA of real genomes")
    ap.add_argument("--labels", help="TSV seq_id, class (a class name or 'outside') of the real genomes")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    config = load_config(args.config)
    for seed in args.seeds:
        measure_seed(seed, args, config)


if __name__ == "__main__":
    main()
