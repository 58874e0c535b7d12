"""Hand a model directory to others the Hugging Face way: a tokenizer for raw sequences, a model card,
files readable by everyone.

- add_remote_tokenizer: tokenization_kmer.py (bertgeom.hub_tokenizer) beside the tokenizer files and
  `auto_map` + `tokenizer_class: KmerSpikeTokenizer` in tokenizer_config.json, so that
  `AutoTokenizer.from_pretrained(dir, trust_remote_code=True)` splits raw spike sequences into the
  k-mers of bertgeom.tokens (same ids). Without trust_remote_code, transformers asks on a terminal
  whether to run the code; elsewhere it falls back to a plain tokenizer that reads space-separated
  k-mers only (a raw sequence would become [UNK]): the model card says so. bertgeom.tokens.KmerTokenizer.load
  reads the same files and does not care.
- write_model_card: README.md from training_info.json, the test metrics and open_set.json.
- make_readable: 0644 for every file (safetensors writes its file 0600).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from bertgeom.io import atomic_path, write_json, write_text

REMOTE_TOKENIZER = "tokenization_kmer.py"
TOKENIZER_CLASS = "KmerSpikeTokenizer"


def add_remote_tokenizer(model_dir: str | Path) -> None:
    """Copy tokenization_kmer.py into model_dir and point tokenizer_config.json at it."""
    model_dir = Path(model_dir)
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    with atomic_path(model_dir / REMOTE_TOKENIZER, ".py") as tmp:
        shutil.copyfile(Path(__file__).with_name("hub_tokenizer.py"), tmp)
    config.update(
        tokenizer_class=TOKENIZER_CLASS, auto_map={"AutoTokenizer": [None, f"tokenization_kmer.{TOKENIZER_CLASS}"]}
    )
    write_json(config_path, config)


def make_readable(model_dir: str | Path) -> None:
    """rw-r--r-- for every file of the directory (collaborators on a shared file system can read them)."""
    for path in Path(model_dir).iterdir():
        if path.is_file():
            os.chmod(path, 0o644)


def _pct(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def model_card(info: dict, metrics: dict, open_set: dict | None, name: str, summary: list[dict] | None = None) -> str:
    """The text of README.md (see write_model_card)."""
    config, classes = info.get("config", {}), info.get("config", {}).get("classes", [])
    data = config.get("data", {})
    per_class = metrics.get("per_class", {})
    rows = "\n".join(
        f"| {c} | {_pct(per_class.get(c, {}).get('precision'))} | {_pct(per_class.get(c, {}).get('recall'))} "
        f"| {_pct(per_class.get(c, {}).get('f1'))} | {per_class.get(c, {}).get('support', 'n/a')} |"
        for c in classes
    )
    text = f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [sars-cov-2, spike, variant-classification, bert, k-mer]
---

# {name}: SARS-CoV-2 variant classifier from the spike gene

A BERT sequence classifier (`BertForSequenceClassification`, {info.get('parameters', 'n/a')} parameters, preset
`{config.get('model', {}).get('preset', 'n/a')}`, init `{config.get('model', {}).get('init', 'n/a')}`) trained by the
bert-geometry workflow (seed {info.get('seed', 'n/a')}). Input: the spike gene (NC_045512.2 nt 21563..25384, in frame
from the ATG) as overlapping {config.get('tokens', {}).get('k', 12)}-mers with stride {config.get('tokens', {}).get('stride', 9)}.

## Classes
{', '.join(f'{i} {c}' for i, c in enumerate(classes))}; and `unassigned` (see Open set).

## Training data
`data.source: {data.get('source', 'n/a')}` ({'synthetic genomes built from lineage profiles, not real genomes' if data.get('source') == 'synthetic' else 'see the training config'}):
{info.get('n_train', 'n/a')} training and {info.get('n_val', 'n/a')} validation sequences. The full configuration is in
`training_info.json`.

## Test metrics (held-out split of the same source)
Accuracy {_pct(metrics.get('accuracy'))}, macro-F1 {_pct(metrics.get('macro_f1'))}.

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}
"""
    if open_set:
        report = open_set.get("report", {})
        cal = report.get("calibration", {})
        text += f"""
## Open set and calibration (`open_set.json`, `open_set.safetensors`)
A sequence is `unassigned` when its `ood_score` exceeds **{open_set['threshold']:.3f}**: the Mahalanobis distance of the
mean token vectors of every layer to the nearest class mean (one covariance per layer shared by the classes, fitted
on the training split). The threshold ({report.get('rule', 'n/a')} rule) is the lowest one with the largest Youden J on
in-class genomes (the validation split and fresh synthetic genomes) and synthetic genomes of lineages outside the
classes ({', '.join(report.get('threshold_lineages', []))}), raised to keep at most
{_pct(report.get('max_false_unassigned'))} of the in-class genomes unassigned: in-class accepted
{_pct(report.get('in_class_accepted'))}, out-of-class rejected {_pct(report.get('out_of_class_rejected'))}.
Training saw {info.get('n_background', 0)} background genomes (outlier exposure: their softmax pulled to uniform).
Probabilities are temperature-scaled with T = {open_set['temperature']:.3f}, fitted on hard synthetic calibration genomes:
on held-out calibration genomes the NLL went from {cal.get('nll_before', float('nan')):.4f} to
{cal.get('nll_after', float('nan')):.4f} and the expected calibration error (15 bins) from {_pct(cal.get('ece_before'))} to
{_pct(cal.get('ece_after'))}.
"""
    else:
        text += "\n## Open set and calibration\nNot fitted for this model: every sequence gets a class.\n"
    if summary:
        text += f"""
## Open set measured (rule `open_set`: the test split and synthetic genomes the threshold never saw)
Share `unassigned` at the threshold, AUROC of `ood_score` against the test split, share correct (in class):

{summary_rows(summary)}
"""
    text += f"""
## Intended use and limits
Research on variant classification and on the geometry of BERT. It knows only the classes above; lineages outside
them should come out `unassigned`, but the open-set threshold was chosen on synthetic genomes. Genomes must be
SARS-CoV-2: the spike is cut out by alignment to NC_045512.2 and checked (QC) before the model sees it. Not a
diagnostic tool; lineage assignment for surveillance belongs to pangolin / Nextclade.

## How to use
```bash
bertgeom predict --model {name} --fasta genomes.fasta --out predictions.tsv   # genomes, QC, open set
```
```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{name}", trust_remote_code=True)   # raw spike nucleotides -> k-mers
model = AutoModelForSequenceClassification.from_pretrained("{name}")
logits = model(**tok(["ATGTTTGTTTTTCTTGTTTTATTGCCACTAGTC..."], return_tensors="pt")).logits
```
`trust_remote_code=True` runs `tokenization_kmer.py` of this directory (50 lines: k-mer splitting). Without it,
transformers asks on a terminal and otherwise falls back to a plain tokenizer that reads space-separated k-mers
only: a raw sequence would then become `[CLS] [UNK] [SEP]`; give it `bertgeom.tokens.KmerTokenizer.load(dir).kmer_text(seq)`
instead. The model sees the spike gene only: cut it out of whole genomes first
(`bertgeom predict` does), and divide the logits by the temperature above for calibrated probabilities.
"""
    return text


def write_model_card(
    training_info: str | Path,
    metrics: str | Path,
    out: str | Path,
    open_set: str | Path | None = None,
    open_set_summary: str | Path | None = None,
    name: str | None = None,
) -> None:
    """Rule model_card: README.md from training_info.json, metrics.json and (if given) open_set.json and
    the open-set evaluation (summary.tsv of rule open_set). name: what the card calls the model
    (default: the name of out's directory)."""
    info = json.loads(Path(training_info).read_text())
    scores = json.loads(Path(metrics).read_text())
    fitted = json.loads(Path(open_set).read_text()) if open_set else None
    summary = read_summary(open_set_summary) if open_set_summary else None
    write_text(out, model_card(info, scores, fitted, name or Path(out).resolve().parent.name, summary))


def read_summary(path: str | Path) -> list[dict]:
    """The rows of an open-set summary.tsv (bertgeom.openset_stage.summarise)."""
    import pandas as pd

    return pd.read_csv(path, sep="\t").to_dict("records")


def summary_rows(summary: list[dict]) -> str:
    """The open-set evaluation as a Markdown table (one row per type)."""
    lines = ["| type | n | unassigned | AUROC | correct |", "|---|---|---|---|---|"]
    for row in summary:
        auroc = "n/a" if isinstance(row["auroc"], float) and math.isnan(row["auroc"]) else f"{row['auroc']:.3f}"
        lines.append(f"| {row['type']} | {row['n']} | {_pct(row['unassigned'])} | {auroc} | {_pct(row['correct'])} |")
    return "\n".join(lines)
