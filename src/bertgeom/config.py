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

`check_config` checks what the schema cannot express (constraints between keys, and between keys and
the files they name) when the workflow is parsed, so that a bad setting fails before the first job.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import yaml

# config/config.schema.yaml and resources/ ship inside the package (links in the checkout,
# package data in a wheel), so an installed package finds them without the checkout.
PACKAGE = Path(__file__).resolve().parent
SCHEMA = PACKAGE / "config.schema.yaml"
RESOURCES = PACKAGE / "resources"
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


def resolve_path(path: str | Path, basedir: str | Path) -> Path:
    """A path from the config: as given if it exists from the working directory (or is absolute),
    else from the workflow's directory `basedir`, else (`resources/<file>`) the package's copy."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    candidates = [Path(basedir) / path]
    if len(path.parts) > 1 and path.parts[0] == "resources":
        candidates.append(RESOURCES.joinpath(*path.parts[1:]))
    return next((found for found in candidates if found.exists()), candidates[0])


# --- cross-key checks: every constraint the schema cannot express, when the workflow is parsed ---


def check_config(config: dict, basedir: str | Path = ".") -> None:
    """A ValueError listing every violated constraint, one line each naming its config keys.

    `config` is validated against the schema (defaults filled); relative paths in it are resolved
    as the workflow does (resolve_path with the workflow's directory `basedir`).
    """
    checks = (
        _data_files, _split_sizes, _tokens_fit, _pretrained_positions, _pretrain_settings, _checkpoint_choice,
        _downstream_needs, _figure_choices, _null_seed,
    )  # fmt: skip
    problems = [problem for check in checks for problem in check(config, Path(basedir))]
    if problems:
        raise ValueError("\n".join(problems))


def _data_files(config: dict, basedir: Path) -> Iterator[str]:
    """The reference exists; the variants file exists and is one; the FASTA files of source fasta, one
    per class; for the synthetic and ncbi sources every class is defined in the variants file (with
    Pango lineages for ncbi)."""
    data, classes = config["data"], config["classes"]
    where = f"(a relative path is looked up in the working directory, then in {basedir})"
    for key in ("reference", "variants"):
        if not resolve_path(data[key], basedir).is_file():
            yield f"config data.{key}: file {data[key]!r} not found {where}"
    if data["source"] == "fasta":
        yield from _fasta_files(classes, data["fasta"], basedir, where)
    variants = resolve_path(data["variants"], basedir)
    if variants.is_file():
        yield from _class_definitions(classes, data["source"], variants)


def _fasta_files(classes: list[str], fasta: dict, basedir: Path, where: str) -> Iterator[str]:
    from bertgeom.data.download import check_fasta_config

    try:
        check_fasta_config(classes, fasta)
    except ValueError as err:
        yield str(err)
    for name, path in fasta.items():
        if name in classes and not resolve_path(path, basedir).is_file():
            yield f"config data.fasta.{name}: file {path!r} not found {where}"


def _class_definitions(classes: list[str], source: str, variants: Path) -> Iterator[str]:
    from bertgeom.data.variants import class_definitions, load_variants

    try:
        load_variants(str(variants))
        definitions = class_definitions(str(variants), classes) if source != "fasta" else []
    except yaml.YAMLError as err:
        yield f"config data.variants: {variants} is not YAML ({' '.join(str(err).split())})"
        return
    except ValueError as err:
        yield f"config classes, data.variants ({source} data): {err}"
        return
    lineageless = [d["name"] for d in definitions if not d.get("pango_lineages")]
    if source == "ncbi" and lineageless:
        yield f"config classes: {lineageless} have no pango_lineages in {variants.name} to query NCBI with"


def _split_sizes(config: dict, basedir: Path) -> Iterator[str]:
    """Synthetic and NCBI data hold at most per_class sequences a class: enough for the stratified
    train/val/test split to give every split one sequence per class (QC can only remove sequences)."""
    from bertgeom.tokens import split_sizes

    source = config["data"]["source"]
    if source == "fasta":
        return
    key = {"synthetic": "per_class", "ncbi": "max_per_class"}[source]
    per_class, n_classes = config["data"][source][key], len(config["classes"])
    tokens = config["tokens"]
    if per_class < 3:
        yield f"config data.{source}.{key} {per_class}: a stratified train/val/test split needs 3 sequences per class"
        return
    sizes = split_sizes(per_class * n_classes, tokens["test_fraction"], tokens["val_fraction"])
    small = [name for name, size in sizes.items() if size < n_classes]
    if small:
        yield (
            f"config tokens.test_fraction {tokens['test_fraction']}, tokens.val_fraction {tokens['val_fraction']}: "
            f"at most {per_class * n_classes} sequences (data.{source}.{key} {per_class} x {n_classes} classes) give "
            f"{sizes}, fewer than one per class in {small}; change the fractions or data.{source}.{key}"
        )


def _tokens_fit(config: dict, basedir: Path) -> Iterator[str]:
    """stride <= k, and the longest spike the QC accepts fits in max_length tokens."""
    from bertgeom.data.spike import longest_accepted
    from bertgeom.tokens import n_kmers

    tokens, change = config["tokens"], config["qc"]["max_length_change"]
    k, stride, max_length = tokens["k"], tokens["stride"], tokens["max_length"]
    if stride > k:
        yield f"config tokens.stride {stride} > tokens.k {k}: k-mers would skip bases (expected stride <= k)"
        return
    longest = longest_accepted(change)
    needed = int(n_kmers(longest, k, stride)) + 2
    if needed > max_length:
        yield (
            f"config tokens.max_length {max_length} < {needed}: the longest spike qc.max_length_change {change} "
            f"accepts ({longest} nt) has {needed} tokens with tokens.k {k}, tokens.stride {stride}, [CLS] and [SEP]"
        )


def _pretrained_positions(config: dict, basedir: Path) -> Iterator[str]:
    """A local model.pretrained checkpoint has at least tokens.max_length positions (a hub id is
    checked when the model is loaded)."""
    model, max_length = config["model"], config["tokens"]["max_length"]
    if model["init"] != "pretrained":
        return
    path = resolve_path(model["pretrained"], basedir) / "config.json"
    positions = json.loads(path.read_text()).get("max_position_embeddings") if path.is_file() else None
    if positions is not None and max_length > positions:
        yield f"config tokens.max_length {max_length} exceeds the {positions} positions of model.pretrained ({path})"


def _pretrain_settings(config: dict, basedir: Path) -> Iterator[str]:
    """The pretrain block, checked by the library that uses it (bertgeom.pretrain_settings.check_settings);
    pretrain.steps 0 switches pre-training off, which model.init mlm cannot do without."""
    from bertgeom.pretrain_settings import check_settings

    settings, init = config["pretrain"], config["model"]["init"]
    if settings["steps"] == 0:
        if init == "mlm":
            yield (
                "config pretrain.steps 0 switches pre-training off, but model.init mlm fine-tunes the pre-trained "
                "encoder: set pretrain.steps >= 1, or model.init scratch"
            )
        return
    try:
        check_settings(settings, config["tokens"]["max_length"])
    except ValueError as err:
        yield f"config {err}"


def _checkpoint_choice(config: dict, basedir: Path) -> Iterator[str]:
    """Every checkpoint of activations.checkpoints exists for model.init."""
    from bertgeom.checkpoints import available

    chosen, init = config["activations"]["checkpoints"], config["model"]["init"]
    missing = [c for c in chosen or [] if c not in available(init)]
    if missing:
        yield (
            f"config activations.checkpoints {chosen}: {missing} do(es) not exist with model.init {init} "
            f"(its checkpoints: {available(init)})"
        )


def _downstream_needs(config: dict, basedir: Path) -> Iterator[str]:
    """What later rules read from the activations and the distribution statistics."""
    activations, stages = config["activations"], config["stats"]["distribution_stages"]
    if "input" not in activations["token_stages"]:
        yield (
            f"config activations.token_stages {activations['token_stages']} lacks input: rule directionality "
            f"reads the input vectors of the token subset (and cone_index its subset scope)"
        )
    if activations["subset_per_class"] < 1:
        yield (
            "config activations.subset_per_class 0: rules attention_patterns and directionality need at least "
            "1 sequence per class at token level"
        )
    if not {"input", "output"} & set(stages):
        yield (
            f"config stats.distribution_stages {stages} has neither input nor output: the distribution figures "
            f"draw the embeddings (input of layer 0) and the output of every layer"
        )


def _figure_choices(config: dict, basedir: Path) -> Iterator[str]:
    figures, seeds, classes = config["figures"], config["train"]["seeds"], config["classes"]
    if figures["example_seed"] is not None and figures["example_seed"] not in seeds:
        yield f"config figures.example_seed {figures['example_seed']} is not one of train.seeds {seeds}"
    if figures["gallery_class"] is not None and figures["gallery_class"] not in classes:
        yield f"config figures.gallery_class {figures['gallery_class']!r} is not one of classes {classes}"


def _null_seed(config: dict, basedir: Path) -> Iterator[str]:
    """The null model of the gate labels is initialised independently of every trained model."""
    seed, seeds = config["patterns"]["nulls"]["seed"], config["train"]["seeds"]
    if seed in seeds:
        yield (
            f"config patterns.nulls.seed {seed} is one of train.seeds {seeds}: the null model must be initialised "
            "independently of every trained model (choose another seed)"
        )
