"""The `bertgeom` command. `bertgeom predict` classifies genomes or spike genes with a trained model.

    bertgeom predict --model results/models/seed0 --fasta my_genomes.fasta [--out predictions.tsv]

The FASTA file is read one batch of records at a time (constant memory, any size). Each record goes
through the steps of the training data (gaps stripped, spike cut out and QC'd, k-mer tokens, the
model; bertgeom.predict). The answer is a class, or `unassigned` when the genome is unlike every class
(open_set.json in the model directory; its ood_score is printed), with a calibrated probability.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import time
from collections import Counter

log = logging.getLogger("bertgeom.cli")

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2
PREDICT_EPILOG = """\
examples:
  bertgeom predict --model results/models/seed0 --fasta genomes.fasta
  bertgeom predict --model results/models/seed0 --fasta aligned.fasta.gz --out predictions.tsv
  bertgeom predict --model results/models/seed0 --fasta spikes.fa --device cpu --threads 4 --quiet

output:
  stdout: one line per record (seq_id, status, prediction, probability, ood_score, reason);
  --out: the full table as TSV (QC numbers gaps_removed, length, n_fraction, strand, unk_fraction,
  closest_class, detail, prob_<class> for every class); stderr: a progress bar on a terminal, a line
  per rejected record and a summary line. prediction is a class or "unassigned" (ood_score above the
  model's open-set threshold); probability is the temperature-scaled probability of closest_class.
  Alignment gaps ('-', '.') are removed and counted. A record without a usable spike (QC) or with
  characters outside the IUPAC codes is a row with status reject and its reason.

exit status:
  0  the file was processed (rejected records are rows, not failures)
  1  the input could not be read (missing, not FASTA, not decodable) or --out could not be written
  2  usage error: bad arguments, or the model directory is missing or incomplete
"""


def parser() -> argparse.ArgumentParser:
    from bertgeom import __version__

    main_parser = argparse.ArgumentParser(prog="bertgeom", description=__doc__.split("\n\n")[0])
    main_parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = main_parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict",
        help="classify genomes or spike genes (FASTA) with a trained model",
        description=__doc__.split("\n\n", 2)[2].strip(),
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("--model", required=True, help="model directory (results/models/seed{seed})")
    predict.add_argument(
        "--fasta", required=True, help="FASTA (plain or .gz; aligned or not) of genomes or spike genes"
    )
    predict.add_argument("--out", help="also write the full table (QC numbers, all class probabilities) as TSV")
    predict.add_argument("--reference", help="NC_045512.2 FASTA (default: the training config's data.reference)")
    predict.add_argument("--batch-size", type=int, default=32, help="records per forward pass (default 32)")
    predict.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    predict.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    predict.add_argument("--quiet", action="store_true", help="no per-record lines on stdout (summary only)")
    predict.set_defaults(func=cmd_predict)
    return main_parser


def _fmt(value: float, digits: int) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def cmd_predict(args: argparse.Namespace) -> int:
    from bertgeom.io import atomic_path
    from bertgeom.predict import Predictor, columns

    if args.batch_size < 1:
        print("bertgeom predict: error: --batch-size must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        predictor = Predictor(args.model, args.reference, args.device)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"bertgeom predict: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if predictor.open_set is None:
        print(
            f"bertgeom predict: warning: {args.model} has no open_set.json: no 'unassigned' answers, "
            "uncalibrated probabilities",
            file=sys.stderr,
        )
    try:
        with contextlib.ExitStack() as stack:
            out = None
            if args.out:
                out = stack.enter_context(open(stack.enter_context(atomic_path(args.out, ".tsv")), "w"))
            counts, reasons, gapped, seconds = stream(predictor, args, out, columns(predictor.classes))
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"bertgeom predict: error: {err}", file=sys.stderr)
        return EXIT_INPUT
    print(summary(counts, reasons, gapped, seconds), file=sys.stderr)
    return EXIT_OK


def stream(predictor, args: argparse.Namespace, out, names: list[str]) -> tuple[Counter, Counter, int, float]:
    """Predict record by record: a line on stdout and a TSV row per record, the progress bar, rejects on stderr.

    Returns the counts per prediction, per reject reason, the records with gaps removed, the seconds taken.
    """
    from tqdm.auto import tqdm

    from bertgeom.data.fasta import read_records

    counts, reasons, gapped, started = Counter(), Counter(), 0, time.monotonic()
    if out:
        out.write("\t".join(names) + "\n")
    if not args.quiet:
        print(f"{'seq_id':<32} {'status':<7} {'prediction':<11} {'probability':>11} {'ood_score':>9}  reason")
    bar = tqdm(unit="rec", desc="predict", disable=None, file=sys.stderr, mininterval=1)
    for row in predictor.rows(read_records(args.fasta, strip_gaps=True), args.batch_size):
        bar.update()
        counts[row["prediction"] or "rejected"] += 1
        gapped += row["gaps_removed"] > 0
        if row["status"] != "pass":
            reasons[row["reason"]] += 1
            message = f"record {row['seq_id']!r}: no usable spike ({row['reason']}: {row['detail']})"
            bar.write(f"bertgeom predict: {args.fasta}: {message}", file=sys.stderr)
        if out:
            out.write("\t".join(_cell(row[name]) for name in names) + "\n")
        if not args.quiet:
            print(
                f"{row['seq_id']:<32} {row['status']:<7} {row['prediction']:<11} "
                f"{_fmt(row['probability'], 4):>11} {_fmt(row['ood_score'], 2):>9}  {row['reason']}"
            )
    bar.close()
    return counts, reasons, gapped, time.monotonic() - started


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value).replace("\t", " ")


def summary(counts: Counter, reasons: Counter, gapped: int, seconds: float) -> str:
    """The closing line: records, assigned per class, unassigned, rejected per reason, gaps."""
    total = sum(counts.values())
    assigned = {k: v for k, v in counts.items() if k not in ("unassigned", "rejected")}
    text = f"bertgeom predict: {total} records in {seconds:.1f} s: {sum(assigned.values())} assigned"
    if assigned:
        text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(assigned.items())) + ")"
    text += f", {counts['unassigned']} unassigned, {counts['rejected']} rejected"
    if reasons:
        text += " (" + ", ".join(f"{k} {v}" for k, v in reasons.most_common()) + ")"
    if gapped:
        text += f"; alignment gaps removed in {gapped} records"
    return text


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no weight-loading bars in the command's output
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
