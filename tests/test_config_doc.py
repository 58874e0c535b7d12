"""docs/config.md, the configuration reference, is generated from config/config.schema.yaml.

Every key of the schema is a row (type and bounds, default, execution-only, description); the test
compares the generated page with docs/config.md, so a changed schema fails it until the page is
regenerated:

    .venv/bin/python tests/test_config_doc.py      # rewrites docs/config.md
"""

from __future__ import annotations

import json
from pathlib import Path

from bertgeom.config import EXECUTION_ONLY, execution_only, leaf_keys, load_schema, schema_node

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "config.md"

INTRO = """\
# Configuration reference

Generated from `config/config.schema.yaml` by `.venv/bin/python tests/test_config_doc.py` (do not
edit by hand; `tests/test_config_doc.py` fails when this page and the schema differ). The schema is
the single source of every key and default.

{description}

The workflow reads `config/config.yaml`, then each file given with `--configfile`, merged on top
key by key (a file needs only the keys it changes); a key set nowhere takes the default below:

```bash
.venv/bin/snakemake --cores all --configfile config/paper.yaml
```

Config files in the repository: `config/config.yaml` (the default offline demo), `config/tiny.yaml`
(the tests' run), `config/paper.yaml` (the paper's setting). What a change reruns: `snakemake -n`
after the edit lists the jobs; the rules each key must rerun (on `config/tiny.yaml`) are the
hand-written table `EXPECTED` of `tests/test_config_reruns.py`, checked there by editing every key.
Column "exec.": `yes` marks the execution-only keys (`{flag}` in the schema), which rerun nothing.
"""


def describe_type(node: dict) -> str:
    """Type and bounds of a schema node, in words."""
    if "enum" in node:
        kind = "one of " + ", ".join(f"`{value}`" for value in node["enum"])
    elif node.get("type") == "array":
        kind = f"list of {describe_type(node.get('items', {})) or 'values'}"
    elif node.get("type") == "object":
        kind = f"mapping: name -> {describe_type(node['additionalProperties'])}"
    else:
        types = node.get("type", [])
        kind = " or ".join(types if isinstance(types, list) else [types])
    bounds = [("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")]
    limits = [f"{sign} {node[name]}" for name, sign in bounds if name in node]
    if "minItems" in node or "maxItems" in node:
        limits.append(f"{node.get('minItems', 0)}..{node.get('maxItems', 'any')} items")
    if node.get("uniqueItems"):
        limits.append("unique")
    return ", ".join([kind, *limits])


def describe_default(value) -> str:
    return "`" + (value if isinstance(value, str) else json.dumps(value)) + "`"


def cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def block_notes(schema: dict, block: str) -> list[str]:
    """The descriptions of a top-level block and of the sub-blocks inside it."""
    notes, node = [], schema_node(schema, block)
    if "description" in node:
        notes.append(cell(node["description"]))
    for key in [k for k in leaf_keys(schema) if k.startswith(f"{block}.")]:
        parent = key.rsplit(".", 1)[0]
        described = schema_node(schema, parent).get("description")
        line = f"`{parent}`: {cell(described)}"
        if parent != block and described and line not in notes:
            notes.append(line)
    return notes


def row(schema: dict, key: str) -> str:
    node = schema_node(schema, key)
    parent = key.rsplit(".", 1)[0]
    description = node.get("description") or f"`{key.rsplit('.', 1)[1]}`, see `{parent}` above"
    exec_only = "yes" if execution_only(schema, key) else ""
    return f"| `{key}` | {cell(describe_type(node))} | {describe_default(node.get('default'))} | {exec_only} | {cell(description)} |"


def generate() -> str:
    schema = load_schema()
    lines = [INTRO.format(description=cell(schema["description"]), flag=f"{EXECUTION_ONLY}: true")]
    for block in schema["properties"]:
        keys = [key for key in leaf_keys(schema) if key == block or key.startswith(f"{block}.")]
        lines += [f"## `{block}`", ""]
        notes = block_notes(schema, block) if keys != [block] else []
        lines += [*(f"- {note}" for note in notes), ""] if notes else []
        lines += ["| key | type | default | exec. | description |", "|---|---|---|---|---|"]
        lines += [row(schema, key) for key in keys] + [""]
    return "\n".join(lines)


def test_every_key_is_described():
    """A key says what it does, itself or through the block it belongs to."""
    schema = load_schema()
    for key in leaf_keys(schema):
        parent = key.rsplit(".", 1)[0] if "." in key else key
        assert schema_node(schema, key).get("description") or schema_node(schema, parent).get("description"), key


def test_config_doc_is_current():
    assert DOC.read_text() == generate(), "docs/config.md is out of date: run .venv/bin/python tests/test_config_doc.py"


if __name__ == "__main__":
    DOC.write_text(generate())
    print(f"wrote {DOC}")
