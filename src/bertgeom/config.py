"""The workflow configuration: the schema's defaults, and config -> canonical rule params.

The schema (config/config.schema.yaml) is the single source of every key and default. The workflow
(rules/common.smk) and everything outside it (tests, benchmarks, the CLI) load the config through it.

Rules pass every setting a job uses through `params:` (`Settings.get` / `Settings.block`), so that
Snakemake reruns a job exactly when a value it uses changes. Params are canonical (dict keys sorted,
numbers typed by the schema), so re-ordering or re-formatting a config reruns nothing. Keys marked
`x-execution-only: true` in the schema (devices, inference batch sizes, log intervals, I/O sizes)
change how a job runs, not what it computes: `Settings.execution` wraps them in a SimpleNamespace,
which Snakemake leaves out of its params comparison (it compares builtin values only), so editing
them reruns nothing while the job still receives them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "config" / "config.schema.yaml"
EXECUTION_ONLY = "x-execution-only"


def load_config(path: str | Path | None = None, **overrides: dict) -> dict:
    """A config file (or {} for the schema defaults alone), validated and completed with the schema's
    defaults exactly as the workflow does; `overrides` replace whole top-level blocks first."""
    from snakemake.utils import validate  # the workflow's own validator, so both agree

    config = yaml.safe_load(Path(path).read_text()) if path else {}
    config = copy.deepcopy(config or {})
    config.update(copy.deepcopy(overrides))
    validate(config, schema=str(SCHEMA))
    return config


def load_schema(path: str | Path = SCHEMA) -> dict:
    return yaml.safe_load(Path(path).read_text())


def schema_node(schema: dict, key: str) -> dict:
    """The schema of a dotted key ("train.lr", "data.fasta.Alpha")."""
    node = schema
    for part in key.split("."):
        properties = node.get("properties", {})
        if part in properties:
            node = properties[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            raise KeyError(f"config key {key!r} is not in the schema")
    return node


def leaf_keys(schema: dict, prefix: str = "") -> list[str]:
    """Every settable key of the schema, dotted, in schema order (objects with fixed properties are
    descended into; free-form mappings such as data.fasta are one key)."""
    keys = []
    for name, node in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        if node.get("type") == "object" and node.get("properties"):
            keys += leaf_keys(node, f"{key}.")
        else:
            keys.append(key)
    return keys


def execution_only(schema: dict, key: str) -> bool:
    return bool(schema_node(schema, key).get(EXECUTION_ONLY, False))


def canonical(value: Any, node: dict) -> Any:
    """`value` with dict keys sorted (recursively) and numbers typed as the schema says: a "number"
    key holds a float (1 and 1.0 are the same setting), an "integer" key an int."""
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, dict):
        props, extra = node.get("properties", {}), node.get("additionalProperties")
        return {
            k: canonical(value[k], props.get(k, extra if isinstance(extra, dict) else {})) for k in sorted(value)
        }
    if isinstance(value, (list, tuple)):
        return [canonical(v, node.get("items", {})) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)) and "number" in types and "integer" not in types:
        return float(value)
    if isinstance(value, float) and "integer" in types and value.is_integer():
        return int(value)
    return value


def _lookup(config: dict, key: str) -> Any:
    value = config
    for part in key.split("."):
        value = value[part]
    return value


class Settings:
    """Config values as rule params: canonical, execution-only keys kept apart (module docstring)."""

    def __init__(self, config: dict, schema: dict | None = None):
        self.config = config
        self.schema = schema if schema is not None else load_schema()

    def get(self, key: str) -> Any:
        """The canonical value of one key; execution-only keys go through `execution`."""
        if execution_only(self.schema, key):
            raise ValueError(f"config {key} is execution-only: pass it with Settings.execution")
        return canonical(_lookup(self.config, key), schema_node(self.schema, key))

    def block(self, key: str, exclude: tuple[str, ...] = ()) -> dict:
        """A config block's keys that change results (canonical), without `exclude` and without the
        execution-only keys."""
        node = schema_node(self.schema, key)
        return {
            name: self.get(f"{key}.{name}")
            for name in sorted(_lookup(self.config, key))
            if name not in exclude and not execution_only(self.schema, f"{key}.{name}") and name in node["properties"]
        }

    def execution(self, key: str) -> SimpleNamespace:
        """A block's execution-only keys, in a wrapper Snakemake does not compare between runs."""
        names = [name for name in sorted(schema_node(self.schema, key)["properties"]) if execution_only(self.schema, f"{key}.{name}")]
        block = _lookup(self.config, key)
        return SimpleNamespace(**{name: canonical(block[name], schema_node(self.schema, f"{key}.{name}")) for name in names})


def check_null_seed(config: dict) -> int:
    """patterns.nulls.seed, checked to differ from every train.seeds (the null model must be
    initialised independently of every trained model); ValueError naming the key otherwise."""
    seed = config["patterns"]["nulls"]["seed"]
    if seed in config["train"]["seeds"]:
        raise ValueError(
            f"config patterns.nulls.seed: {seed} is one of train.seeds {config['train']['seeds']}; the null model "
            "must be initialised independently of every trained model: choose another seed"
        )
    return seed
