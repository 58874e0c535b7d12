"""No dangling reference in the documentation (README.md, docs/*.md, resources/README.md) or in the
comments and docstrings of the code, rules, configs and profiles.

Checked everywhere: every path into the repository (`rules/x.smk`, `src/bertgeom/stats/{cone,aggregate}.py`,
`report/<id>.rst`: brace lists expanded, `<...>` / `{wildcard}` / `*` matched as globs) names a file
that exists; every section named as `docs/methods.md, "Geometry statistics"` is a heading of that file.
In the documentation also: every relative link (and its #anchor, against the target's headings);
every `make <target>` is a Makefile target; every `bertgeom <command>` is a command of the CLI; no
"issue N" (the tracker is not part of the repository); every `bertgeom.module.name` imports.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from bertgeom.cli import parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "resources").rglob("README.md"))]
CODE_FILES = ("src/bertgeom/**/*.py", "rules/*.smk", "scripts/*.py", "benchmarks/*.py", "config/*.yaml",
              "profiles/**/*.yaml", "report/*.rst", "Snakefile", "Makefile")  # fmt: skip
SOURCES = sorted({path for pattern in CODE_FILES for path in ROOT.glob(pattern)})
GENERATED = ("benchmarks/out/",)  # outputs of the benchmarks (git-ignored), named in their docstrings
# Top-level folders of the repository that documentation points into.
REPO_DIRS = ("src", "tests", "rules", "scripts", "config", "docs", "resources", "benchmarks", "profiles", "envs", "report", ".ci")

LINK = re.compile(r"\]\(([^)\s]+)\)")
PATH = re.compile(rf"(?<![\w./-])((?:{'|'.join(map(re.escape, REPO_DIRS))})/[\w./{{}},<>*+-]*)")
CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
MAKE = re.compile(r"(?:^|[\s;&(])make ([a-z][\w-]*)")
COMMAND = re.compile(r"(?:^|[\s/])bertgeom ([a-z][\w-]*)")
ISSUE = re.compile(r"\bissues? \d+\b", re.I)
PYTHON = re.compile(r"\bbertgeom(?:\.[A-Za-z_]\w*)+")
FILE_SUFFIXES = {"yaml", "yml", "py", "md", "json", "tsv", "txt"}  # envs/bertgeom.yaml is a file, not Python
SECTION = re.compile(r'(README\.md|README|docs/[\w.]+\.md),? "([^"]+)"')


def expand(reference: str) -> list[str]:
    """`a/{b,c}.py` -> a/b.py, a/c.py; wildcards (`{seed}`, `<id>`) -> `*`."""
    reference = re.sub(r"<[^>]*>|\{[\w.]*\}", "*", reference)
    match = re.search(r"\{([^{}]*)\}", reference)
    if not match:
        return [reference]
    head, tail = reference[: match.start()], reference[match.end() :]
    return [path for part in match.group(1).split(",") for path in expand(head + part + tail)]


def exists(reference: str) -> bool:
    return all(any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists() for path in expand(reference))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # a "# comment" in code is no heading
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def headings(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return [line.lstrip("#").strip().replace("`", "") for line in text.splitlines() if line.startswith("#")]


def reference_problems(text: str) -> list[str]:
    """Paths and named sections, in any text."""
    found = []
    for reference in (found_path.rstrip(".,:;") for found_path in PATH.findall(text)):
        if not reference.startswith(GENERATED) and not exists(reference):
            found.append(f"path {reference}: no such file")
    for file, section in SECTION.findall(text):
        target = ROOT / ("README.md" if file == "README" else file)
        section = " ".join(section.replace("#", " ").split())  # a name wrapped over comment lines
        if not target.exists() or not any(heading.startswith(section) for heading in headings(target)):
            found.append(f'section {file}, "{section}": no such heading')
    return found


def resolves(dotted: str) -> bool:
    """`bertgeom.a.b.name`: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(found, name):
                return False
            found = getattr(found, name)
        return True
    return False


def problems(doc: Path) -> list[str]:
    text = doc.read_text()
    found = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#") and not target[1:]:
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            found.append(f"link {target}: no file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            found.append(f"link {target}: no heading with anchor #{anchor}")
    found += reference_problems(text)
    code = "\n".join(CODE.findall(text))
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    found += [f"make {name}: no such Makefile target" for name in MAKE.findall(code) if name not in targets]
    commands = set(parser()._subparsers._group_actions[0].choices)
    found += [f"bertgeom {name}: no such command" for name in COMMAND.findall(code) if name not in commands]
    found += [f"{mention!r}: a tracker reference" for mention in ISSUE.findall(text)]
    names = {name for name in PYTHON.findall(text) if name.rsplit(".", 1)[1] not in FILE_SUFFIXES}
    found += [f"{name}: does not import" for name in sorted(names) if not resolves(name)]
    return found


def test_the_checks_catch_what_they_should(tmp_path):
    """Known answers: each kind of dangling reference is found, and the living ones are not."""
    doc = ROOT / "docs" / "_probe.md"
    try:
        doc.write_text(
            "[ok](../README.md) [gone](missing.md) [anchor](errors.md#no-such-heading) see issue 6,\n"
            'docs/methods.md, "Geometry statistics" and README, "Predict"; bertgeom.io.iter_batches, bertgeom.io.nope\n'
            "`src/bertgeom/{config,cli}.py` `src/bertgeom/{config,nope}.py` rules/nope.smk, report/<id>.rst\n"
            "```bash\nmake test\nmake nonsense\nbertgeom predict --help\nbertgeom nonsense\n```\n"
        )
        found = problems(doc)
    finally:
        doc.unlink()
    assert found == [
        "link missing.md: no file docs/missing.md",
        "link errors.md#no-such-heading: no heading with anchor #no-such-heading",
        "path src/bertgeom/{config,nope}.py: no such file",
        "path rules/nope.smk: no such file",
        'section README, "Predict": no such heading',
        "make nonsense: no such Makefile target",
        "bertgeom nonsense: no such command",
        "'issue 6': a tracker reference",
        "bertgeom.io.nope: does not import",
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_dangling_reference_in_the_docs(doc):
    assert problems(doc) == []


def test_no_dangling_reference_in_the_code():
    found = [f"{path.relative_to(ROOT)}: {problem}" for path in SOURCES for problem in reference_problems(path.read_text())]
    assert found == []
