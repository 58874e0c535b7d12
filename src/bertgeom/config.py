"""The workflow configuration outside Snakemake (tests, benchmarks, the CLI): YAML + schema defaults."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "config" / "config.schema.yaml"


def load_config(path: str | Path | None = None, **overrides: dict) -> dict:
    """A config file (or {} for the schema defaults alone), validated and completed with the schema's
    defaults exactly as the workflow does; `overrides` replace whole top-level blocks first."""
    from snakemake.utils import validate  # the workflow's own validator, so both agree

    config = yaml.safe_load(Path(path).read_text()) if path else {}
    config = copy.deepcopy(config or {})
    config.update(copy.deepcopy(overrides))
    validate(config, schema=str(SCHEMA))
    return config
