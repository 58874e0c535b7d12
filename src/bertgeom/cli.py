"""The `bertgeom` command. `bertgeom predict` classifies genomes or spike genes with a trained model.

    bertgeom predict --model results/models/seed0 --fasta my_genomes.fasta [--out predictions.tsv]

Each record goes through the same steps as the training data: the spike is cut out of the genome
(minimap2 against NC_045512.2, or taken as it is when the record is a spike gene) and checked with
the QC settings the model was trained with (training_info.json), then k-mer tokenized with the
model's own tokenizer. The table printed has one row per record: seq_id, status, predicted class,
its probability. Records without a usable spike are listed with the reason (status reject) and
reported on stderr; the exit status is then 1 (0 when every record was classified, 2 on bad usage
or unreadable input).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

log = logging.getLogger("bertgeom.cli")

ROOT = Path(__file__).resolve().parents[2]  # the checkout (editable install): resources/ lives there
DEFAULT_REFERENCE = "resources/NC_045512.2.fasta"


def find_reference(given: str | None, training_config: dict) -> Path:
    """--reference, else the training config's data.reference, from the working directory or the checkout."""
    name = given or training_config.get("data", {}).get("reference", DEFAULT_REFERENCE)
    for path in (Path(name), ROOT / name):
        if path.is_file():
            return path
    raise FileNotFoundError(f"reference FASTA {name!r} not found; pass --reference PATH to NC_045512.2.fasta")


def training_config(model_dir: Path) -> dict:
    """The config a model was trained with (training_info.json): its QC settings and reference are
    applied to new genomes, so a model directory without it is an error, not a silent default."""
    path = Path(model_dir) / "training_info.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{model_dir}: not a trained model directory (missing training_info.json: the QC settings "
            f"and reference of the training run, which predict applies to new genomes)"
        )
    return json.loads(path.read_text()).get("config", {})


def predict_records(
    records: list[tuple[str, str]],
    model_dir: str | Path,
    reference: str | None = None,
    batch_size: int = 32,
    device: str = "auto",
) -> pd.DataFrame:
    """One row per record: seq_id, status (pass/reject), reason, detail, prediction, probability,
    and prob_<class> for every class (empty for rejected records)."""
    # Imported here, not at the top: `bertgeom --help` should not wait for torch.
    import torch

    from bertgeom.data.spike import SpikeExtractor
    from bertgeom.model import load_model, predict_probs
    from bertgeom.tokens import KmerTokenizer, n_kmers
    from bertgeom.train import select_device

    model_dir = Path(model_dir)
    config = training_config(model_dir)
    qc = {
        k: v
        for k, v in config.get("qc", {}).items()
        if k in ("max_n_fraction", "allow_internal_stops", "preset", "flank")
    }
    model = load_model(model_dir, select_device(device))
    tokenizer = KmerTokenizer.load(model_dir)
    classes = [model.config.id2label[i] for i in range(model.config.num_labels)]
    extractor = SpikeExtractor(find_reference(reference, config), **qc)

    rows, spikes = [], []
    for seq_id, sequence in records:
        res = extractor.extract(seq_id, sequence)
        row = {"seq_id": seq_id, "status": res.status, "reason": res.reason, "detail": res.detail}
        tokens = int(n_kmers(res.length, tokenizer.k, tokenizer.stride)) + 2
        if res.status == "pass" and tokens > tokenizer.max_length:
            row.update(
                status="reject",
                reason="too_long",
                detail=f"{res.length} nt give {tokens} tokens > max_length {tokenizer.max_length}",
            )
        if row["status"] == "pass":
            spikes.append((len(rows), res.sequence))
        rows.append(row)
    table = pd.DataFrame(rows, columns=["seq_id", "status", "reason", "detail"])
    table["prediction"], table["probability"] = "", float("nan")
    if spikes:
        ids, n_tokens = tokenizer.encode([s for _, s in spikes], [records[i][0] for i, _ in spikes])
        device_ = next(model.parameters()).device
        probs = predict_probs(
            model, torch.from_numpy(ids), torch.from_numpy(n_tokens).long(), batch_size, device_
        ).numpy()
        where = [i for i, _ in spikes]
        table.loc[where, "prediction"] = [classes[c] for c in probs.argmax(1)]
        table.loc[where, "probability"] = probs.max(1)
        for c, name in enumerate(classes):
            table[f"prob_{name}"] = float("nan")
            table.loc[where, f"prob_{name}"] = probs[:, c]
    return table


def cmd_predict(args: argparse.Namespace) -> int:
    from bertgeom.data.fasta import read_fasta
    from bertgeom.io import atomic_path

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    records = list(read_fasta(args.fasta))
    table = predict_records(records, args.model, args.reference, args.batch_size, args.device)
    shown = table[["seq_id", "status", "prediction", "probability", "reason"]]
    print(shown.to_string(index=False, float_format=lambda p: f"{p:.4f}", na_rep=""))
    if args.out:
        with atomic_path(args.out, ".tsv") as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    rejected = table[table["status"] != "pass"]
    for row in rejected.itertuples():
        print(
            f"bertgeom predict: {args.fasta}: record {row.seq_id!r}: no usable spike ({row.reason}: {row.detail})",
            file=sys.stderr,
        )
    return 1 if len(rejected) else 0


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(prog="bertgeom", description=__doc__.split("\n\n")[0])
    commands = main_parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="classify genomes or spike genes (FASTA) with a trained model")
    predict.add_argument("--model", required=True, help="model directory (results/models/seed{seed})")
    predict.add_argument("--fasta", required=True, help="FASTA (plain or .gz) of whole genomes or spike genes")
    predict.add_argument("--out", help="also write the full table (all class probabilities) as TSV")
    predict.add_argument("--reference", help="NC_045512.2 FASTA (default: the training config's data.reference)")
    predict.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (default 32)")
    predict.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    predict.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    predict.set_defaults(func=cmd_predict)
    return main_parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no weight-loading bars in the command's output
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"bertgeom {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
