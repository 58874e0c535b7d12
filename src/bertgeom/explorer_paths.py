"""Where the explorer finds a run's tables (light: the workflow imports it when it parses the rules)."""

from __future__ import annotations

from pathlib import Path

ACTIVATION_TABLES = ("class_attention", "attention")
STATS_TABLES = ("gates", "attention_patterns", "directionality", "k90")


def checkpoint_level(name: str, checkpoint: str) -> str:
    """The folder of one checkpoint's tables under results/activations or results/stats (name:
    seed{seed} or all_seeds): the path level `checkpoint` (docs/outputs.md)."""
    return f"{name}/{checkpoint}"


def stage_paths(results, seed: int, checkpoint: str) -> dict[str, Path]:
    """{table name: path} of what the explorer reads for one seed and checkpoint."""
    level = checkpoint_level(f"seed{seed}", checkpoint)
    paths = {name: Path(results) / "activations" / level / f"{name}.parquet" for name in ACTIVATION_TABLES}
    return paths | {name: Path(results) / "stats" / level / f"{name}.parquet" for name in STATS_TABLES}


def cone_path(results, checkpoint: str) -> Path:
    return Path(results) / "stats" / checkpoint_level("all_seeds", checkpoint) / "cone_index.parquet"


def results_root(token_map) -> Path:
    """The results folder that holds `token_map` as tokens/token_map.parquet (the rule's input)."""
    path = Path(token_map)
    if path.name != "token_map.parquet" or path.parent.name != "tokens":
        raise ValueError(f"{token_map}: expected <results>/tokens/token_map.parquet")
    return path.parents[1]


