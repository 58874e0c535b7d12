"""Calibration of `bertgeom plan` on this machine: per-stage micro-benchmarks at base shape (12 layers
x 12 heads, hidden 768, 512 tokens, 427 real), each in a fresh process (its peak RSS is the stage's).

  train        2 optimiser steps (1 timed) of bertgeom.train's step at batch 4, 1 thread (rule train's)
  forward      the model's forward pass at batch 8 (evaluate), the job's threads
  dump         bertgeom.activations.dump of --sequences sequences twice: no token-level subset, and all
               of them in the subset: seconds and bytes per sequence and per subset sequence
  cone_index, directionality, null_model, attention_patterns
               the rule's library function on the second dump (null_model and attention_patterns at
               the fewest nulls the schema allows and at its defaults: cost linear in the nulls)

Writes benchmarks/plan_calibration.json (or --out), which `bertgeom plan` reads.

    nice -n 10 .venv/bin/python benchmarks/calibrate_plan.py [--sequences 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_activations import CLASSES, LENGTH, REAL, make_model, make_tokens, peak_rss

ROOT = Path(__file__).resolve().parents[1]
PAPER_VOCAB = 28996 + 33289  # bert-base-cased's WordPiece vocabulary + the paper's k-mers
FEWEST_NULLS = {"row_draws": 10, "permutations": 1}  # the schema's minimums (config/rehearsal.yaml)


def _train(tmp: Path, threads: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_check import measure

    torch.set_num_threads(1)
    row = measure("base", 4, LENGTH, steps=1, warmup=1, device=torch.device("cpu"), compile_=False)
    return {"tokens_per_s": row["tokens_per_s"]}


def _forward(tmp: Path, threads: int) -> dict:
    import torch
    from transformers import BertForSequenceClassification

    torch.set_num_threads(threads)
    model = BertForSequenceClassification.from_pretrained(tmp / "model").eval()
    ids = torch.randint(5, 4000, (8, LENGTH))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        model(input_ids=ids[:2], attention_mask=mask[:2])  # warm-up
        start = time.perf_counter()
        model(input_ids=ids, attention_mask=mask)
    return {"sequences_per_s": 8 / (time.perf_counter() - start)}


def _dump(tmp: Path, threads: int, subset: int) -> dict:
    import torch

    from bertgeom import activations
    from bertgeom.config import load_config

    torch.set_num_threads(threads)
    out = tmp / f"dump{subset}"
    settings = {**load_config()["activations"], "splits": ["test"], "subset_per_class": subset, "device": "cpu"}
    outputs = {name: out / f"{name}.parquet" for name in activations.OUTPUT_FILES}
    start = time.perf_counter()
    activations.dump(tmp / "model", {"test": tmp / "tokens.parquet"}, outputs, CLASSES, settings, top_keys=5)
    sizes = {name: p.stat().st_size for name, p in outputs.items()}
    return {"seconds": time.perf_counter() - start, "bytes": sum(sizes.values()), "file_bytes": sizes}


def _cone_index(tmp: Path, threads: int) -> dict:
    from bertgeom.stats.cone import write_cone_index

    d = tmp / "dump1"
    start = time.perf_counter()
    write_cone_index(d / "summary.parquet", d / "heads.parquet", d / "attention_summary.parquet", d / "tokens.parquet",
                     tmp / "cone.parquet", CLASSES, 0, 3.0)  # fmt: skip
    return {"seconds": time.perf_counter() - start}


def _directionality(tmp: Path, threads: int) -> dict:
    from bertgeom.stats.directionality import write_directionality

    d = tmp / "dump1"
    start = time.perf_counter()
    write_directionality(str(tmp / "model"), d / "tokens.parquet", d / "attention.parquet", tmp / "dir.parquet", 1e-6, 0)
    return {"seconds": time.perf_counter() - start}


def _patterns(nulls: str) -> dict:
    from bertgeom.config import load_config

    patterns = load_config()["patterns"]
    if nulls == "fewest":
        patterns["nulls"].update(FEWEST_NULLS)
    return patterns


def _null_model(tmp: Path, threads: int, nulls: str) -> dict:
    import torch

    from bertgeom.stats.null_model import write_null_model

    torch.set_num_threads(threads)
    outputs = {name: tmp / f"null_{nulls}_{name}.parquet" for name in ("scores", "gates")}
    start = time.perf_counter()
    write_null_model(tmp / "model" / "config.json", [tmp / "tokens.parquet"], outputs, _patterns(nulls), subset_per_class=1)
    return {"seconds": time.perf_counter() - start}


def _attention_patterns(tmp: Path, threads: int, nulls: str) -> dict:
    from bertgeom.data.variants import spike_domains
    from bertgeom.io import write_parquet
    from bertgeom.stats.attention import write_attention_patterns
    from bertgeom.tokens import token_map

    variants = ROOT / "resources" / "variants.yaml"
    write_parquet(token_map(LENGTH, 12, 9, spike_domains(variants)), tmp / "token_map.parquet")
    names = ("patterns", "gates", "gate_tests", "row_gates", "k90", "domains")
    d = tmp / "dump1"
    start = time.perf_counter()
    write_attention_patterns(d / "attention_summary.parquet", d / "attention.parquet", d / "class_attention.parquet",
                             tmp / "token_map.parquet", variants, tmp / f"null_{nulls}_scores.parquet",
                             {n: tmp / f"{n}_{nulls}.parquet" for n in names}, _patterns(nulls), CLASSES, 0, 8192)  # fmt: skip
    return {"seconds": time.perf_counter() - start}


def _startup(tmp: Path, threads: int) -> dict:
    """What every job pays before its work: the interpreter and the library's imports."""
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import bertgeom.activations  # noqa: F401
    import bertgeom.stats.attention  # noqa: F401
    import bertgeom.stats.cone  # noqa: F401

    return {}


WORKERS = {
    "train": _train,
    "forward": _forward,
    "dump0": lambda tmp, threads: _dump(tmp, threads, 0),
    "dump1": lambda tmp, threads: _dump(tmp, threads, 1),
    "cone_index": _cone_index,
    "directionality": _directionality,
    "null_model_fewest": lambda tmp, threads: _null_model(tmp, threads, "fewest"),
    "null_model_default": lambda tmp, threads: _null_model(tmp, threads, "default"),
    "attention_patterns_fewest": lambda tmp, threads: _attention_patterns(tmp, threads, "fewest"),
    "attention_patterns_default": lambda tmp, threads: _attention_patterns(tmp, threads, "default"),
    "startup": _startup,
}


MULTI_THREADED = ("forward", "dump0", "dump1")  # the others run on one thread, as their rules' jobs do


def run(name: str, tmp: Path, threads: int) -> dict:
    """One micro-benchmark in a fresh process: its numbers, CPU seconds and peak RSS."""
    threads = threads if name in MULTI_THREADED else 1
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--worker", name, str(tmp), str(threads)], capture_output=True,
                          text=True, env=env)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - start
    print(f"{name:28s} {json.dumps(result)}", flush=True)
    return result


def resume(partial: Path, tmp: Path, threads: int) -> dict:
    """Every micro-benchmark, each result kept in `partial` as it comes: a rerun after a failure
    repeats only those not done (their inputs are remade: the model, the tokens and the dumps)."""
    measured = json.loads(partial.read_text()) if partial.exists() else {}
    for name in WORKERS:
        if name not in measured or name.startswith("dump1"):  # dump1 is the later stages' input
            measured[name] = run(name, tmp, threads)
            partial.write_text(json.dumps(measured))
    partial.unlink()
    return measured


def worker(name: str, tmp: str, threads: str) -> None:
    cpu = time.process_time()
    result = WORKERS[name](Path(tmp), int(threads))
    result["cpu_s"] = time.process_time() - cpu
    result["peak_rss"] = peak_rss()
    print(json.dumps(result))


def fixed_costs(m: dict, sequences: int, small: dict, few: int) -> dict:
    """Seconds per job that do not grow with the subset (model building, weight analysis, reading
    the per-sequence files), from the same stage at `sequences` and at `few` subset sequences (the
    nulls' stages at their fewest nulls: the fixed part does not depend on them)."""
    fixed = {}
    for stage, name in (("cone_index", "cone_index"), ("directionality", "directionality"),
                        ("null_model", "null_model_fewest"), ("attention_patterns", "attention_patterns_fewest")):  # fmt: skip
        big, little = m[name]["seconds"], small[name]["seconds"]
        fixed[stage] = max((little * sequences - big * few) / (sequences - few), 0.0)
    return fixed


def calibration(m: dict, sequences: int, small: dict | None = None, few: int = 2) -> dict:
    """The constants `bertgeom.plan.project` reads, from the micro-benchmarks' results `m` (and
    `small`: those of a run at `few` sequences, for the fixed costs per job)."""
    from bertgeom.plan import Shape

    shape = Shape(12, 768, 12, 3072, LENGTH)
    fwd = shape.forward_flops()
    params = shape.matmul_params() + (PAPER_VOCAB + LENGTH + 2) * shape.hidden
    wall_per_cpu = m["dump1"]["seconds"] / m["dump1"]["cpu_s"]
    fixed = fixed_costs(m, sequences, small, few) if small else {}
    per_subset = lambda name: (m[name]["seconds"] - fixed.get(name.removesuffix("_fewest").removesuffix("_default"), 0.0)) / sequences  # noqa: E731
    return {
        "train_flops_per_s": m["train"]["tokens_per_s"] / LENGTH * 3 * fwd,
        "forward_flops_per_s": m["forward"]["sequences_per_s"] * fwd,
        "params_per_matmul_param": params / shape.matmul_params(),
        "train_fixed_bytes_per_param": 16.0,  # fp32 weights, gradients and AdamW's two moments
        "train_bytes_per_sample": max(m["train"]["peak_rss"] - 16.0 * params, 0.0) / 4,  # gpu_check.measure: the paper's vocabulary
        "checkpoint_bytes_per_param": 12.0,  # resumable checkpoint: weights and AdamW's moments
        "forward_peak_bytes": m["forward"]["peak_rss"],
        # split by CPU seconds (the two dumps ran minutes apart on a shared machine: their walls are
        # not comparable), in wall seconds at dump1's wall / CPU
        "dump_s_per_seq": m["dump0"]["cpu_s"] / sequences * wall_per_cpu,
        "dump_s_per_subset_seq": max(m["dump1"]["cpu_s"] - m["dump0"]["cpu_s"], 0.0) / sequences * wall_per_cpu,
        # class_attention.parquet is per class, not per sequence (bertgeom.plan counts it per class)
        "dump_bytes_per_seq": (m["dump0"]["bytes"] - m["dump0"]["file_bytes"]["class_attention"]) / sequences,
        "dump_bytes_per_subset_seq": (m["dump1"]["bytes"] - m["dump0"]["bytes"]) / sequences,
        "dump_peak_bytes": m["dump1"]["peak_rss"],
        "cone_index_s_per_subset_seq": per_subset("cone_index"),
        "cone_index_peak_bytes": m["cone_index"]["peak_rss"],
        "directionality_s_per_subset_seq": per_subset("directionality"),
        "directionality_peak_bytes": m["directionality"]["peak_rss"],
        **{f"{stage}_{nulls}_s_per_subset_seq": per_subset(f"{stage}_{nulls}") for stage in ("null_model", "attention_patterns")
           for nulls in ("fewest", "default")},  # fmt: skip
        "null_model_peak_bytes": m["null_model_default"]["peak_rss"],
        "attention_patterns_peak_bytes": m["attention_patterns_default"]["peak_rss"],
        "nulls": {"fewest": FEWEST_NULLS, "default": {k: v for k, v in _patterns("default")["nulls"].items() if k in FEWEST_NULLS}},
        "real_tokens": REAL,
        "job_startup_s": m["startup"]["process_wall_s"],
        **{f"{stage}_fixed_s": seconds for stage, seconds in fixed.items()},
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=8, help="sequences of the dump micro-benchmarks (one per class)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the forward pass and the dump (rule dump_activations)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "plan_calibration.json"))
    parser.add_argument("--recompute", action="store_true", help="only recompute the constants from --out's measured block")
    parser.add_argument("--small", help="with --recompute: the JSON of a run at --few sequences (fixed costs per job)")
    parser.add_argument("--few", type=int, default=2, help="the --small run's sequences")
    parser.add_argument("--only", nargs="+", choices=sorted(WORKERS), help="with --recompute: first rerun these micro-benchmarks")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = arguments()
    if args.worker:
        return worker(*args.worker)
    if args.recompute:
        previous = json.loads(Path(args.out).read_text())
        with tempfile.TemporaryDirectory() as tmp:
            make_model(Path(tmp) / "model", preset="base")
            make_tokens(Path(tmp) / "tokens.parquet", args.sequences)
            previous["measured"].update({name: run(name, Path(tmp), args.threads) for name in args.only or ()})
        small = json.loads(Path(args.small).read_text())["measured"] if args.small else None
        result = {**previous, **calibration(previous["measured"], args.sequences, small, args.few)}
        first = previous["command"].split(" && ")[0]
        result["command"] = first + (f" && ... --sequences {args.few} --out SMALL && ... --recompute --small SMALL" if small else "")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            make_model(tmp / "model", preset="base")
            make_tokens(tmp / "tokens.parquet", args.sequences)
            measured = resume(Path(args.out + ".partial"), tmp, args.threads)
        result = calibration(measured, args.sequences)
        result["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or platform.platform()})"
        result["measured"] = measured
        result["command"] = "nice -n 10 .venv/bin/python benchmarks/calibrate_plan.py " + " ".join(sys.argv[1:])
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
