"""docs/errors.md, the bad-input table, is generated from the messages the code raises.

Every row below is triggered here (the config checks as the workflow runs them, files through the
functions the jobs call, `bertgeom predict` through its command line) and the table is compared with
docs/errors.md, so a changed message fails this test until the table is regenerated:

    .venv/bin/python tests/test_errors_doc.py      # rewrites docs/errors.md

BAD_SETTINGS is also run through Snakemake by tests/test_faults.py (rejected before the first job).
"""

from __future__ import annotations

import contextlib
import gzip
import io as std_io
import logging
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # as a script: the test helpers beside this file

from workflow import TINY  # noqa: E402

from bertgeom.config import check_config, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "errors.md"
REFERENCE = ROOT / "resources" / "NC_045512.2.fasta"
VARIANTS = ROOT / "resources" / "variants.yaml"


# --- bad settings: rejected when the workflow is parsed ------------------------------------------


def _variants_without_lineages() -> str:
    variants = yaml.safe_load(VARIANTS.read_text())
    variants["classes"][0]["pango_lineages"] = []
    return yaml.safe_dump(variants, sort_keys=False)


@dataclass(frozen=True)
class BadSetting:
    """Edits of config/tiny.yaml (dotted keys) that check_config rejects, and the files they name
    (created in the run's folder)."""

    edits: dict
    files: dict[str, Callable[[], str]] = field(default_factory=dict)

    def config(self) -> dict:
        config = yaml.safe_load(TINY.read_text())
        for key, value in self.edits.items():
            *parents, last = key.split(".")
            block = config
            for part in parents:
                block = block.setdefault(part, {})
            block[last] = value
        return config

    def prepare(self, folder: Path) -> None:
        for name, content in self.files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(content())

    def message(self, folder: Path) -> str:
        """check_config's error for this setting, run from `folder` as Snakemake runs it from its."""
        with contextlib.chdir(folder):
            config = load_config(**self.config())
            with pytest.raises(ValueError) as error:
                check_config(config, ROOT)
        return str(error.value)


FASTA_CLASSES = {"classes": ["Alpha", "Delta"], "data.source": "fasta", "figures.gallery_class": None}
BAD_SETTINGS = {
    "tokens.stride above tokens.k": BadSetting({"tokens.stride": 13}),
    "tokens.max_length too small for the longest spike the QC accepts": BadSetting({"tokens.max_length": 400}),
    "qc.max_length_change accepting spikes longer than tokens.max_length": BadSetting({"qc.max_length_change": 900}),
    "model.pretrained (local) with fewer positions than tokens.max_length": BadSetting(
        {"model.init": "pretrained", "model.pretrained": "small_bert"},
        {"small_bert/config.json": lambda: '{"max_position_embeddings": 256}'},
    ),
    "model.init mlm with pre-training switched off (pretrain.steps 0)": BadSetting({"pretrain.steps": 0}),
    "activations.checkpoints naming a checkpoint model.init does not have": BadSetting(
        {"model.init": "scratch", "activations.checkpoints": ["mlm", "finetuned"]}
    ),
    "pretrain.mask_rate outside (0, 1)": BadSetting({"pretrain.mask_rate": 1.0}),
    "pretrain.span longer than the k-mers of a window": BadSetting({"pretrain.window": 16, "pretrain.span": 20}),
    "figures.example_seed not in train.seeds": BadSetting({"figures.example_seed": 7}),
    "figures.gallery_class not in classes": BadSetting({"figures.gallery_class": "Zeta"}),
    "patterns.nulls.seed is a training seed": BadSetting({"patterns.nulls.seed": 0}),
    "activations.token_stages empty": BadSetting({"activations.token_stages": []}),
    "activations.token_stages without input": BadSetting({"activations.token_stages": ["q", "k", "output"]}),
    "activations.subset_per_class 0": BadSetting({"activations.subset_per_class": 0}),
    "stats.distribution_stages without input and output": BadSetting({"stats.distribution_stages": ["attn_ln"]}),
    "data.synthetic.per_class below 3": BadSetting({"data.synthetic.per_class": 2}),
    "splits too small for one sequence per class": BadSetting({"tokens.val_fraction": 0.08}),
    "data.reference not found": BadSetting({"data.reference": "missing.fasta"}),
    "data.variants not found": BadSetting({"data.variants": "missing.yaml"}),
    "data.variants not YAML": BadSetting({"data.variants": "broken.yaml"}, {"broken.yaml": lambda: "classes: [a, b\n"}),
    "data.variants not a variants file": BadSetting({"data.variants": "other.yaml"}, {"other.yaml": lambda: "a: 1\n"}),
    "classes not in the variants file (synthetic or ncbi data)": BadSetting({"classes": ["GH", "Zeta"]}),
    "ncbi data: a class without Pango lineages": BadSetting(
        {"data.source": "ncbi", "data.variants": "no_lineages.yaml"}, {"no_lineages.yaml": _variants_without_lineages}
    ),
    "fasta data: data.fasta empty": BadSetting(FASTA_CLASSES),
    "fasta data: a class without a file": BadSetting(
        {**FASTA_CLASSES, "data.fasta": {"Alpha": "alpha.fasta"}}, {"alpha.fasta": lambda: ">a\nACGT\n"}
    ),
    "fasta data: a file for a class not in classes": BadSetting(
        {**FASTA_CLASSES, "data.fasta": {"Alpha": "a.fasta", "Delta": "a.fasta", "Zeta": "a.fasta"}},
        {"a.fasta": lambda: ">a\nACGT\n"},
    ),
    "fasta data: a file not found": BadSetting(
        {**FASTA_CLASSES, "data.fasta": {"Alpha": "a.fasta", "Delta": "delta.fasta"}}, {"a.fasta": lambda: ">a\nACGT\n"}
    ),
}


# --- every other input error ------------------------------------------------------------------


def _error(function: Callable, *args, **kwargs) -> str:
    """The message of the exception that function(*args, **kwargs) raises (it must raise)."""
    try:
        function(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 (any error is the row's message)
        return str(error)
    raise AssertionError(f"{function.__name__}{args} raised nothing")


def _warnings(function: Callable, *args) -> str:
    """The warnings bertgeom logs while function(*args) runs, one per line."""
    stream = std_io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("bertgeom")
    logger.addHandler(handler)
    try:
        function(*args)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().strip()


def schema_error(**overrides) -> str:
    """The lines of Snakemake's schema validation error that say what and where."""
    message = _error(load_config, **overrides)
    return "\n".join(line for line in message.splitlines() if line.startswith(("ValidationError", "On instance")))


def fasta_error(tmp: Path, content: bytes | str | None, name: str = "in.fasta") -> str:
    """read_fasta's error on a file of `content` (None: no file)."""
    from bertgeom.data.fasta import read_fasta

    if content is not None:
        Path(name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return _error(lambda: list(read_fasta(name)))


BAD_FASTA = {  # what is wrong: (content, file name)
    "no such file": (None,),
    "neither text nor gzip": (b"\x1f\x8b\x08garbage", "in.fasta.gz"),
    "a line before the first header": ("ACGT\n>a\nACGT\n",),
    "no records": ("",),
    "a header without an id": (">\nACGT\n",),
    "an id twice in a file": (">a\nACGT\n>a\nACGT\n",),
    "a record without sequence": (">a\n>b\nACGT\n",),
    "characters that are not IUPAC nucleotide codes": (">a\nACGTX!\n",),
}


def reference_error(tmp: Path, content: str) -> str:
    from bertgeom.data.spike import SpikeExtractor

    Path("reference.fasta").write_text(content)
    return _error(SpikeExtractor, "reference.fasta")


def variants_error(tmp: Path, **changes) -> str:
    """The error of a variants.yaml class Alpha with one profile of `changes` (none: no profile)."""
    from bertgeom.data.synthetic import class_profiles
    from bertgeom.data.variants import read_reference

    class_def = {"name": "Alpha", "profiles": [{"lineage": "B.1.1.7", **changes}] if changes else []}
    return _error(class_profiles, read_reference(REFERENCE), class_def, "variants.yaml")


def same_id_in_two_files(tmp: Path) -> str:
    from bertgeom.data.download import download

    (tmp / "a.fasta").write_text(">x\nACGT\n")
    (tmp / "b.fasta").write_text(">x\nGGCC\n")
    fasta = {"A": "a.fasta", "B": "b.fasta"}
    return _error(download, "g.fasta", "m.tsv", None, None, ["A", "B"], {"source": "fasta", "strip_gaps": False}, fasta=fasta)


def trims_too_long(tmp: Path) -> str:
    from bertgeom.data.download import synthetic_genomes

    settings = {**load_config()["data"]["synthetic"], "trim_5p_max": 40000, "trim_3p_max": 40000}
    return _error(lambda: list(synthetic_genomes(["Alpha"], REFERENCE, VARIANTS, settings, seed=0)))


def class_empty_after_qc(tmp: Path) -> str:
    from bertgeom.data.download import write_genomes
    from bertgeom.data.spike import extract_dataset
    from bertgeom.data.variants import read_reference

    junk = "".join(np.random.default_rng(0).choice(list("ACGT"), 3000))
    records = [("a1", read_reference(REFERENCE), {"class": "Alpha"}), ("d1", junk, {"class": "Delta"})]
    records = [(i, s, {**f, "lineage": "", "source": "fasta", "release_date": "", "origin": "", "synthetic": False})
               for i, s, f in records]  # fmt: skip
    write_genomes(records, tmp / "genomes.fasta", tmp / "manifest.tsv")
    qc = load_config()["qc"]
    return _error(extract_dataset, "genomes.fasta", "manifest.tsv", REFERENCE, ["Alpha", "Delta"], qc)


def split_error(per_class: list[int], test_fraction: float = 0.2, val_fraction: float = 0.08) -> str:
    from bertgeom.tokens import stratified_split

    labels = np.repeat(np.arange(len(per_class)), per_class)
    return _error(stratified_split, labels, test_fraction, val_fraction, 42, ["Alpha", "Delta"])


def pretrained_error(tmp: Path, vocab: str | None) -> str:
    from bertgeom.tokens import load_base_vocab

    (tmp / "base").mkdir()
    if vocab is not None:
        (tmp / "base" / "vocab.txt").write_text(vocab)
    return _error(load_base_vocab, "base")


def ncbi_error(tmp: Path, kind: str) -> str:
    from ncbi_server import FakeNcbi
    from test_data_ncbi import CLASSES, SETTINGS, _fast_client, _lineages

    from bertgeom.data.ncbi import ncbi_genomes

    if kind == "unreachable":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return _error(_fast_client(url).lineage_accessions, "B.1.1.7")
    with FakeNcbi(_lineages(), {"report": ["500"] * 10}) as server:
        client = _fast_client(server.url + ("/v1" if kind == "4xx" else ""), max_retries=2)
        if kind == "empty class":
            defs = [{"name": "A", "pango_lineages": ["L.1"]}, {"name": "B", "pango_lineages": ["M.9"]}]
            server.faults.clear()
            return _error(lambda: list(ncbi_genomes(CLASSES, defs, SETTINGS, seed=0, cache_dir=tmp, client=client)))
        return _error(client.lineage_accessions, "L.1")


def no_cuda(key: str) -> str:
    """The device picker asked for cuda (config `key`) on a machine without CUDA."""
    import torch

    from bertgeom.model import select_device

    available, torch.cuda.is_available = torch.cuda.is_available, lambda: False
    try:
        return _error(select_device, "cuda", f"config {key}")
    finally:
        torch.cuda.is_available = available


def model_dir(tmp: Path) -> Path:
    """An untrained tiny classifier saved as training saves it, with a tokenizer of max_length 430 (a
    model whose inputs are shorter than the longest spike the default QC accepts)."""
    from bertgeom.data.variants import SPIKE_END, SPIKE_START, read_reference
    from bertgeom.model import build_model
    from bertgeom.tokens import KmerTokenizer, build_vocab, kmers
    from bertgeom.train import save_model_dir

    directory = tmp / "model"
    if not directory.exists():
        spike = read_reference(REFERENCE)[SPIKE_START - 1 : SPIKE_END]
        tokenizer = KmerTokenizer(build_vocab(sorted(set(kmers(spike, 12, 9)))), 12, 9, 430)
        model = build_model({"init": "scratch", "preset": "tiny"}, ["Alpha", "Delta"], tokenizer, seed=0)
        info = {"config": {"qc": load_config()["qc"], "data": {"reference": str(REFERENCE)}}}
        save_model_dir(model, tokenizer, directory, [], info)
    return directory


OPEN_SET_WARNING = "has no open_set.json"


def predict(tmp: Path, *args: str, warning: bool = False) -> str:
    """What `bertgeom predict` prints on stderr about the input (in tmp, so that paths show relative):
    its errors and rejected records, or (warning) its warning about a model without an open set."""
    from bertgeom.cli import main

    stderr = std_io.StringIO()
    Path("in.fasta").write_text(">x\nACGT\n")
    with contextlib.chdir(tmp), contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(std_io.StringIO()):
        main(["predict", "--device", "cpu", *args])
    lines = stderr.getvalue().splitlines()
    return "\n".join(line for line in lines if (OPEN_SET_WARNING in line) == warning and " records in " not in line)


def predict_model(tmp: Path, *args: str, remove: str | None = None, warning: bool = False) -> str:
    """`bertgeom predict` with model_dir(tmp) (without its file `remove`)."""
    model_dir(tmp)
    if remove:
        (tmp / "model" / remove).unlink()
    return predict(tmp, "--model", "model", *args, warning=warning)


def predict_rejects(tmp: Path) -> str:
    """Records without a usable spike, one per QC reason: each is a line on stderr (exit status 1)."""
    from bertgeom.data.fasta import write_fasta
    from bertgeom.data.variants import SPIKE_END, SPIKE_START, read_reference

    genome = read_reference(REFERENCE)
    s0, s1 = SPIKE_START - 1, SPIKE_END
    spike = genome[s0:s1]
    records = [
        ("junk", "".join(np.random.default_rng(0).choice(list("ACGT"), 3000))),
        ("long", spike[:1800] + "GCT" * 40 + spike[1800:]),
        ("masked", genome[:21600] + "N" * 2000 + genome[23600:]),
        ("frameshift", spike[:1800] + spike[1801:]),
        ("stop", spike[:1800] + "TAA" + spike[1803:]),
        ("too_long", spike[:1800] + "GCT" * 30 + spike[1800:]),
        ("odd", spike[:1800] + "X!" + spike[1800:]),
    ]
    write_fasta(tmp / "records.fasta", records)
    return predict_model(tmp, "--fasta", "records.fasta")


def damaged_checkpoint(tmp: Path, part: str) -> str:
    """A checkpoint of a tiny model, then damaged, then resumed from."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from bertgeom.model import build_model
    from bertgeom.tokens import KmerTokenizer, build_vocab
    from bertgeom.train import load_checkpoint, make_optimizer, save_checkpoint

    model = build_model({"init": "scratch", "preset": "tiny"}, ["a", "b"], KmerTokenizer(build_vocab([]), 12, 9, 16), 0)
    optimizer = make_optimizer(model, {"weight_decay": 0.0, "lr": 1e-3, "eps": 1e-8})
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, 10)
    save_checkpoint(Path("checkpoints"), 1, model, optimizer, scheduler, {"fingerprint": "f", "log": [], "epochs": []})
    path = Path("checkpoints") / f"epoch1.{part}"
    path.write_bytes(path.read_bytes()[:100])
    with torch.no_grad():
        return _warnings(load_checkpoint, Path("checkpoints"), "f", model, optimizer, scheduler)


def damaged_cache(tmp: Path, kind: str) -> str:
    from bertgeom import resumable

    if kind == "zip":
        resumable.write_bytes("batch-Alpha-0123456789abcdef.zip", b"PK" + bytes(100))
        Path("batch-Alpha-0123456789abcdef.zip").write_bytes(b"PK" + bytes(50))
        return _warnings(resumable.intact, "batch-Alpha-0123456789abcdef.zip")
    if kind == "no checksum":
        Path("batch-Alpha-0123456789abcdef.zip").write_bytes(b"PK" + bytes(100))
        return _warnings(resumable.intact, "batch-Alpha-0123456789abcdef.zip")
    resumable.write_json("accessions-Alpha.json", {"query": {}, "accessions": {"OL1.1": "B.1.1.7"}})
    Path("accessions-Alpha.json").write_text('{"query": {}, "accessions": {"OL1.1": "B.1.1.7"}, "conte')
    return _warnings(resumable.load_json, "accessions-Alpha.json")


def stale_temporary(tmp: Path) -> str:
    from bertgeom.io import sweep_temporaries

    Path(".summary.parquet.x1y2z3w4.parquet").write_bytes(b"half a table")
    return _warnings(sweep_temporaries, ["summary.parquet"])


@dataclass(frozen=True)
class Row:
    what: str
    trigger: Callable[[Path], str]  # run in an empty folder (the working directory)


CONFIG = "The config, when the workflow is parsed (before the first job)"
FILES = "Files the config names, when a job reads them"
DATA = "The data, while the jobs run"
PREDICT = "`bertgeom predict`"
STATE = "Damaged resumable state (healed: a warning in the job's log, the work redone)"
SECTIONS = {
    CONFIG: [
        Row("a value of the wrong type (Snakemake's schema validation; every key)",
            lambda tmp: schema_error(train={"epochs": "ten"})),
        Row("a value out of range", lambda tmp: schema_error(qc={"max_n_fraction": 2})),
        Row("a value not among those allowed", lambda tmp: schema_error(data={"source": "genbank"})),
        Row("an unknown key", lambda tmp: schema_error(data={"colour": "blue"})),
        *(Row(name, lambda tmp, s=setting: (s.prepare(tmp), s.message(tmp))[1]) for name, setting in BAD_SETTINGS.items()),
    ],
    FILES: [
        Row("data.reference: not FASTA", lambda tmp: reference_error(tmp, "hello\n")),
        Row("data.reference: no sequence", lambda tmp: reference_error(tmp, ">ref\n")),
        Row("data.reference: not NC_045512.2", lambda tmp: reference_error(tmp, ">ref\n" + "ACGT" * 7500 + "\n")),
        Row("data.variants: a substitution not written REF<pos>ALT", lambda tmp: variants_error(tmp, substitutions=["C3267"])),
        Row("data.variants: a substitution the reference disagrees with", lambda tmp: variants_error(tmp, substitutions=["A3267T"])),
        Row("data.variants: a deletion outside the genome", lambda tmp: variants_error(tmp, deletions=[{"start": 29900, "length": 10}])),
        Row("data.variants: an insertion outside the genome or not ACGT", lambda tmp: variants_error(tmp, insertions=[{"after": 100, "bases": "AXG"}])),
        Row("data.variants: a class without profiles (synthetic data)", variants_error),
        *(Row(f"data.fasta: {what}", lambda tmp, c=content: fasta_error(tmp, *c)) for what, content in BAD_FASTA.items()),
        Row("data.fasta: an id in two files", same_id_in_two_files),
        Row("model.pretrained: not a local BERT directory and not loadable from the hub", lambda tmp: pretrained_error(tmp, None)),
        Row("model.pretrained: a vocabulary without the special tokens", lambda tmp: pretrained_error(tmp, "a\nb\n")),
    ],
    DATA: [
        Row("data.synthetic: trims longer than a genome", trims_too_long),
        Row("a class with no sequence left after QC", class_empty_after_qc),
        Row("fewer than 3 sequences in a class", lambda tmp: split_error([10, 2])),
        Row("fewer than 2 sequences of a class left for the validation split", lambda tmp: split_error([3, 3], 0.5)),
        Row("a split with fewer sequences than classes (fasta data; synthetic and ncbi data are checked before "
            "the first job)", lambda tmp: split_error([10, 3])),
        Row("data.source ncbi: NCBI unreachable", lambda tmp: ncbi_error(tmp, "unreachable")),
        Row("data.source ncbi: an HTTP error that is no use retrying (4xx)", lambda tmp: ncbi_error(tmp, "4xx")),
        Row("data.source ncbi: retries used up (429, 5xx, timeouts, broken zips)", lambda tmp: ncbi_error(tmp, "retries")),
        Row("data.source ncbi: no genome for a class", lambda tmp: ncbi_error(tmp, "empty class")),
        Row("train.device (or activations.device) cuda without a CUDA device", lambda tmp: no_cuda("train.device")),
    ],
    PREDICT: [
        Row("--model: without training_info.json (or not a model directory at all)",
            lambda tmp: predict(tmp, "--model", ".", "--fasta", "in.fasta")),
        Row("--model: without its weights (or config.json)",
            lambda tmp: predict_model(tmp, "--fasta", "in.fasta", remove="model.safetensors")),
        Row("--fasta: no such file (and every data.fasta error above)", lambda tmp: predict_model(tmp, "--fasta", "missing.fasta")),
        Row("--reference: no such file", lambda tmp: predict_model(tmp, "--fasta", "in.fasta", "--reference", "none.fasta")),
        Row("--batch-size below 1", lambda tmp: predict_model(tmp, "--fasta", "in.fasta", "--batch-size", "0")),
        Row("--model: without open_set.json (a warning: no 'unassigned' answers)",
            lambda tmp: predict_model(tmp, "--fasta", "in.fasta", warning=True)),
        Row("records without a usable spike (rows with status reject and the reason; exit status 0)", predict_rejects),
    ],
    STATE: [
        Row("a checkpoint's JSON cut short", lambda tmp: damaged_checkpoint(tmp, "json")),
        Row("a checkpoint's weights damaged", lambda tmp: damaged_checkpoint(tmp, "safetensors")),
        Row("a cached NCBI batch damaged", lambda tmp: damaged_cache(tmp, "zip")),
        Row("a cached NCBI batch without its checksum (cut short before it)", lambda tmp: damaged_cache(tmp, "no checksum")),
        Row("a cached NCBI accession list damaged", lambda tmp: damaged_cache(tmp, "accessions")),
        Row("a temporary left by a killed job (when the job runs again)", stale_temporary),
    ],
}  # fmt: skip


def normalise(message: str, tmp: Path) -> str:
    """Paths of the test's folders out; digests, ports and third-party error text as placeholders."""
    message = message.replace(f"{tmp}{os.sep}", "").replace(str(tmp), ".").replace(str(ROOT), "<workflow>")
    message = re.sub(r"\b[0-9a-f]{12}\.\.\.", "<sha256>...", message)
    message = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", message)
    message = re.sub(r"(ConnectionError): .*\); check", r"\1: ...); check", message)
    message = re.sub(r"(\(offline\?\)|when online\)): .*", r"\1: <the error of transformers>", message, flags=re.S)
    return re.sub(r"^\S+ WARNING ", "", message, flags=re.M)


def generate(tmp_root: Path) -> str:
    lines = [
        "# Bad input: every error the workflow and `bertgeom predict` recognise",
        "",
        "Each message names the file, record or config key and what was expected. Config errors stop the",
        "workflow before its first job (Snakemake prints them under `ValueError in file .../common.smk`).",
        "`<workflow>` stands for the workflow's folder; other paths are as given. Generated by",
        "`.venv/bin/python tests/test_errors_doc.py` from the messages the code raises; tests/test_errors_doc.py",
        "triggers every row and fails when this page is out of date.",
    ]
    for number, (section, rows) in enumerate(SECTIONS.items()):
        lines += ["", f"## {section}", "", "| input | message |", "| --- | --- |"]
        for index, row in enumerate(rows):
            tmp = tmp_root / f"{number}-{index}"
            tmp.mkdir(parents=True)
            with contextlib.chdir(tmp):
                message = normalise(row.trigger(tmp), tmp)
            cell = "<br>".join(f"`{line}`" for line in message.replace("|", "\\|").splitlines())
            lines.append(f"| {row.what.replace('|', chr(92) + '|')} | {cell} |")
    return "\n".join(lines) + "\n"


def test_errors_doc_is_current(tmp_path):
    expected = generate(tmp_path)
    assert DOC.read_text() == expected, "docs/errors.md is out of date: run .venv/bin/python tests/test_errors_doc.py"


if __name__ == "__main__":
    import tempfile

    logging.getLogger("bertgeom").propagate = False  # the warnings some rows trigger: in the table only
    logging.getLogger("bertgeom").addHandler(logging.NullHandler())
    with tempfile.TemporaryDirectory() as folder:
        DOC.write_text(generate(Path(folder)))
    print(f"wrote {DOC}")
