"""`bertgeom plan`: what a config will cost, per stage, before it runs (issue 17).

    bertgeom plan --configfile config/paper.yaml [--gpu H100] [--mfu 0.4] [--results results]
    bertgeom plan --configfile config/rehearsal.yaml --measured results/benchmarks   # projected vs measured

The workload comes from the config: sequences per split (`bertgeom.tokens.split_sizes` of the data
source's count: synthetic per_class, ncbi max_per_class (an upper bound), fasta records), seeds,
epochs, the model's shape (preset, or a local model.pretrained's config.json, or a known hub id).
The costs come from a calibration file measured on this machine by micro-benchmarks at base shape
(benchmarks/calibrate_plan.py writes benchmarks/plan_calibration.json):

- model FLOPs (forward per sequence of max_length tokens; training = 3 x forward), divided by the
  measured CPU FLOP/s of a forward pass and of a training step, or by a named GPU's dense bf16 peak
  times an assumed MFU (`--mfu`; stated in the output, never measured here);
- seconds (per job, and per token-level subset sequence), bytes and peak memory of the stages
  whose cost is not model FLOPs (dump, cone_index, attention_patterns, directionality, null_model),
  measured by running the stage's library function. These run on the CPU also on a GPU machine
  (except the dump's forward pass), so their GPU-machine time is the CPU time.

Every job also pays a measured start-up (interpreter and imports). evaluate, open_set_fit and
open_set are forward passes on one thread (their rules' threads), at the training step's measured
FLOP/s (one thread too). Stages not listed (data, tokens, genome sets, figures, aggregation) are not
projected. Disk is the stage's outputs (the model's checkpoint directory,
removed after training, counted at its peak).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from bertgeom.config import resolve_path

CHECKOUT = Path(__file__).resolve().parents[2]  # the workflow's directory (an editable install's checkout)
CALIBRATION = CHECKOUT / "benchmarks" / "plan_calibration.json"
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, matched on the device name.
PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}
KNOWN_HUB = {"bert-base-cased": "base", "bert-base-uncased": "base", "google-bert/bert-base-cased": "base"}


@dataclass
class Shape:
    layers: int
    hidden: int
    heads: int
    ffn: int
    length: int  # tokens per sequence (max_length: batches are padded to it)

    def matmul_params(self) -> int:
        return self.layers * (4 * self.hidden**2 + 2 * self.hidden * self.ffn)

    def forward_flops(self) -> float:
        """Model FLOPs of one sequence's forward pass: the weight matmuls and QK^T, AV (embeddings,
        LayerNorm, softmax and the head left out)."""
        return 2 * self.matmul_params() * self.length + 4 * self.length**2 * self.hidden * self.layers


def flops_per_token(shape: Shape, seq: int) -> float:
    """Training FLOPs (forward + backward = 3 x forward) per token at `seq` real tokens."""
    return 6 * shape.matmul_params() + 12 * seq * shape.hidden * shape.layers


def model_shape(config: dict, basedir: Path) -> Shape:
    """The model's shape from model.preset, a local model.pretrained's config.json, or a known hub id."""
    from bertgeom.model import PRESETS

    model, length = config["model"], config["tokens"]["max_length"]
    preset = model["preset"]
    if model["init"] == "pretrained":
        local = resolve_path(model["pretrained"], basedir) / "config.json"
        if local.is_file():
            c = json.loads(local.read_text())
            return Shape(c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"], c["intermediate_size"], length)
        if model["pretrained"] not in KNOWN_HUB:
            raise ValueError(
                f"config model.pretrained {model['pretrained']!r}: no local config.json and not a known hub id "
                f"({sorted(KNOWN_HUB)}): name a local copy to plan it"
            )
        preset = KNOWN_HUB[model["pretrained"]]
    p = PRESETS[preset]
    return Shape(p["num_hidden_layers"], p["hidden_size"], p["num_attention_heads"], p["intermediate_size"], length)


def sequences(config: dict, basedir: Path) -> int:
    """Sequences the data source gives (before QC, which can only remove some)."""
    from bertgeom.data.fasta import read_records

    source, n_classes = config["data"]["source"], len(config["classes"])
    if source == "synthetic":
        return config["data"]["synthetic"]["per_class"] * n_classes
    if source == "ncbi":
        return config["data"]["ncbi"]["max_per_class"] * n_classes
    return sum(1 for path in config["data"]["fasta"].values() for _ in read_records(resolve_path(path, basedir)))


@dataclass
class Workload:
    shape: Shape
    splits: dict[str, int]
    seeds: int
    epochs: int
    batch: int
    dumped: int  # sequences through dump_activations per seed
    subset: int  # token-level subset sequences per seed
    outlier: bool  # outlier exposure: each step also sees batch / 2 background genomes
    permutations: int  # patterns.nulls.permutations (the nulls' cost is interpolated in it)
    classes: int = 1
    open_fit: int = 0  # sequences through the model in open_set_fit (train + val + fit genome sets)
    open_eval: int = 0  # and in open_set (test + evaluation genome set)


def workload(config: dict, basedir: Path) -> Workload:
    from bertgeom.tokens import split_sizes

    t = config["tokens"]
    splits = split_sizes(sequences(config, basedir), t["test_fraction"], t["val_fraction"])
    act, train = config["activations"], config["train"]
    n_classes = len(config["classes"])
    dumped = sum(splits[s] for s in act["splits"])
    subset = sum(min(act["subset_per_class"] * n_classes, splits[s]) for s in act["splits"])
    fit, evaluation = open_set_sizes(config, basedir)
    return Workload(model_shape(config, basedir), splits, len(train["seeds"]), train["epochs"], train["batch_size"],
                    dumped, subset, train["outlier_weight"] > 0, config["patterns"]["nulls"]["permutations"], n_classes,
                    splits["train"] + splits["val"] + fit, splits["test"] + evaluation)  # fmt: skip


def open_set_sizes(config: dict, basedir: Path) -> tuple[int, int]:
    """Genomes made for open_set_fit (fresh in-class, calibration, `threshold` lineages) and for
    open_set (`evaluation` lineages and the variants.yaml classes left out, the reference, shuffled
    spikes and random sequences), before QC."""
    from bertgeom.data.variants import load_variants

    variants = load_variants(resolve_path(config["data"]["variants"], basedir))
    uses = [entry.get("use") for entry in variants.get("out_of_class", {}).get("lineages", [])]
    left_out = sum(1 for entry in variants["classes"] if entry["name"] not in config["classes"])
    o, n_classes = config["open_set"], len(config["classes"])
    fit = n_classes * (o["fresh_per_class"] + o["calibration"]["per_class"]) + o["per_lineage"] * uses.count("threshold")
    return fit, o["per_lineage"] * (uses.count("evaluation") + left_out) + 2 * o["controls"] + 1


@dataclass
class Stage:
    name: str
    runs: int  # jobs (per seed or once)
    flops: float  # model FLOPs per job (0: not FLOP-bound)
    cpu_s: float  # per job, this machine
    gpu_s: float  # per job, the named GPU's machine
    disk: float  # bytes per job
    memory: float  # peak bytes of one job


def project(work: Workload, cal: dict, peak_tflops: float, mfu: float) -> list[Stage]:
    """Per-stage projection of a workload with calibration `cal` (plan_calibration.json)."""
    fwd = work.shape.forward_flops()
    params = work.shape.matmul_params() * cal["params_per_matmul_param"]
    gpu = peak_tflops * 1e12 * mfu
    single = cal["train_flops_per_s"]  # one thread (rules evaluate, open_set_fit, open_set: threads 1), as train
    trained = work.splits["train"] * (1.5 if work.outlier else 1.0)
    train_flops = work.epochs * (3 * fwd * trained + fwd * work.splits["val"])
    # the training step's activation memory grows with the batch, the weights and AdamW's state do not
    train_mem = cal["train_fixed_bytes_per_param"] * params + cal["train_bytes_per_sample"] * work.batch
    dump_cpu = work.dumped * cal["dump_s_per_seq"] + work.subset * cal["dump_s_per_subset_seq"]
    # on a GPU the per-sequence reductions run on the device beside the forward pass (scaled as it),
    # the subset's float16 encoding and Parquet writes stay on the host
    dump_gpu = work.dumped * cal["dump_s_per_seq"] * cal["forward_flops_per_s"] / gpu + work.subset * cal["dump_s_per_subset_seq"]
    shape = work.shape  # class_attention.parquet: a float32 [real, real] matrix per (class, layer, head), at most
    class_attention = work.classes * shape.layers * shape.heads * cal["real_tokens"] ** 2 * 4
    per_subset = {name: cal[f"{name}_s_per_subset_seq"] * work.subset for name in ("cone_index", "directionality")}
    for name in ("null_model", "attention_patterns"):
        per_subset[name] = nulls_cost(cal, name, work.permutations) * work.subset
    for name in per_subset:  # what a job costs whatever the subset (model, weights, per-sequence files)
        per_subset[name] += cal[f"{name}_fixed_s"]
    stages = [
        Stage("train", work.seeds, train_flops, train_flops / cal["train_flops_per_s"], train_flops / gpu,
              (4 + cal["checkpoint_bytes_per_param"]) * params, train_mem),
        Stage("evaluate", work.seeds, fwd * work.splits["test"], fwd * work.splits["test"] / single,
              fwd * work.splits["test"] / gpu, 0.0, cal["forward_peak_bytes"]),
        Stage("open_set_fit", work.seeds, fwd * work.open_fit, fwd * work.open_fit / single, fwd * work.open_fit / gpu, 0.0,
              cal["forward_peak_bytes"]),
        Stage("open_set", work.seeds, fwd * work.open_eval, fwd * work.open_eval / single, fwd * work.open_eval / gpu, 0.0,
              cal["forward_peak_bytes"]),
        Stage("dump_activations", work.seeds, fwd * work.dumped, dump_cpu, dump_gpu,
              work.dumped * cal["dump_bytes_per_seq"] + work.subset * cal["dump_bytes_per_subset_seq"] + class_attention,
              cal["dump_peak_bytes"]),
        Stage("null_model", 1, 0.0, per_subset["null_model"], per_subset["null_model"], 0.0, cal["null_model_peak_bytes"]),
    ]  # fmt: skip
    for name in ("attention_patterns", "cone_index", "directionality"):
        stages.append(Stage(name, work.seeds, 0.0, per_subset[name], per_subset[name], 0.0, cal[f"{name}_peak_bytes"]))
    for stage in stages:  # every job starts an interpreter and imports the library first
        stage.cpu_s += cal["job_startup_s"]
        stage.gpu_s += cal["job_startup_s"]
    return stages


def nulls_cost(cal: dict, stage: str, permutations: int) -> float:
    """Seconds per subset sequence of a stage whose cost is linear in the nulls: interpolated between
    the calibration's fewest and default nulls (row draws assumed to move with the permutations)."""
    low, high = cal["nulls"]["fewest"]["permutations"], cal["nulls"]["default"]["permutations"]
    a, b = cal[f"{stage}_fewest_s_per_subset_seq"], cal[f"{stage}_default_s_per_subset_seq"]
    return max(a + (b - a) * (permutations - low) / (high - low), 0.0)


def free_bytes(results: Path) -> int:
    """Free space of the file system that holds `results` (or its nearest existing parent)."""
    path = Path(results).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def disk_warning(total: float, results: Path) -> str | None:
    free = free_bytes(results)
    if total > free:
        return f"warning: the projected outputs ({_size(total)}) exceed the free space of {results} ({_size(free)})"
    return None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return ""


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


def read_measured(directory: Path) -> dict[str, dict]:
    """{stage: {"s", "max_rss"}} summed over a run's Snakemake benchmark files (results/benchmarks/<rule>/*.tsv)."""
    import pandas as pd

    measured = {}
    for rule in sorted(p for p in Path(directory).iterdir() if p.is_dir()):
        frames = [pd.read_csv(f, sep="\t") for f in sorted(rule.rglob("*.tsv"))]  # any depth: per seed (and checkpoint)
        if frames:
            frame = pd.concat(frames)
            measured[rule.name] = {"s": float(frame["s"].sum()), "max_rss": float(frame["max_rss"].max()) * 2**20}
    return measured


def report(stages: list[Stage], work: Workload, gpu: str, mfu: float, measured: dict | None = None) -> str:
    """The table `bertgeom plan` prints (times and disk over all jobs of a stage, memory of one job)."""
    lines = [
        f"sequences {work.splits} (train/val/test), {work.seeds} seed(s), {work.epochs} epoch(s), "
        f"model {work.shape.layers} layers x {work.shape.heads} heads, hidden {work.shape.hidden}, {work.shape.length} tokens; "
        f"dumped {work.dumped}, token-level subset {work.subset} per seed",
        f"GPU: {gpu} at an assumed MFU of {mfu:.0%} of its dense bf16 peak (assumption, not a measurement); "
        "CPU: this machine, calibrated by benchmarks/calibrate_plan.py",
        f"{'stage':20s} {'jobs':>4s} {'TFLOP':>9s} {'CPU time':>10s} {'GPU time':>10s} {'disk':>10s} {'peak memory':>12s}"
        + ("  measured     measured/projected" if measured else ""),
    ]
    for st in stages:
        line = (f"{st.name:20s} {st.runs:4d} {st.flops * st.runs / 1e12:9.1f} {_duration(st.cpu_s * st.runs):>10s} "
                f"{_duration(st.gpu_s * st.runs):>10s} {_size(st.disk * st.runs):>10s} {_size(st.memory):>12s}")  # fmt: skip
        if measured and st.name in measured:
            m = measured[st.name]["s"]
            line += f"  {_duration(m):>9s}  {m / (st.cpu_s * st.runs):6.2f}"
        lines.append(line)
    total = sum(st.disk * st.runs for st in stages)
    lines.append(f"{'total':20s} {'':4s} {'':9s} {_duration(sum(s.cpu_s * s.runs for s in stages)):>10s} "
                 f"{_duration(sum(s.gpu_s * s.runs for s in stages)):>10s} {_size(total):>10s}")  # fmt: skip
    return "\n".join(lines)


def plan(configfile: str, gpu: str = "H100", mfu: float = 0.4, results: str = "results", calibration: str | Path = CALIBRATION,
         measured: str | None = None) -> tuple[str, float]:  # fmt: skip
    """(the printed table, projected disk in bytes) of a config file; its relative paths are looked
    up in the working directory, then in this checkout, as the workflow looks them up."""
    from bertgeom.config import check_config, load_config

    if gpu not in PEAK_TFLOPS:
        raise ValueError(f"--gpu {gpu!r}: expected one of {sorted(PEAK_TFLOPS)}")
    config = load_config(configfile)
    basedir = CHECKOUT
    check_config(config, basedir)
    work = workload(config, basedir)
    cal = json.loads(Path(calibration).read_text())
    stages = project(work, cal, PEAK_TFLOPS[gpu], mfu)
    text = report(stages, work, gpu, mfu, read_measured(Path(measured)) if measured else None)
    total = sum(st.disk * st.runs for st in stages)
    warning = disk_warning(total, Path(results))
    return text + (f"\n{warning}" if warning else ""), total


def workflow_disk_warning(config: dict, basedir: str | Path, results: str | Path) -> str | None:
    """The disk warning at the workflow's start (Snakefile onstart); None when it fits or cannot be projected."""
    try:
        cal = json.loads(CALIBRATION.read_text())
        stages = project(workload(config, Path(basedir)), cal, PEAK_TFLOPS["H100"], 0.4)
    except Exception as err:  # a warning must never stop the run it warns about
        return f"bertgeom plan: no disk projection ({type(err).__name__}: {err})"
    return disk_warning(sum(st.disk * st.runs for st in stages), Path(results))

