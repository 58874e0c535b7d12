"""Running the workflow from tests: the snakemake command line on a working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = ROOT / "config" / "tiny.yaml"


def snakemake_command(workdir: Path, *args: str, configfile: Path = TINY) -> list[str]:
    return [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(configfile), *args]  # fmt: skip


def snakemake(
    workdir: Path, *args: str, configfile: Path = TINY, timeout: int = 1800, check: bool = True, env: dict | None = None
):
    """`snakemake` on this checkout's Snakefile with `workdir` as working directory; the result of
    subprocess.run (stdout, stderr as text). check: fail with the end of the output if it failed.
    env: variables added to the environment."""
    command = snakemake_command(workdir, *args, configfile=configfile)
    env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    return result
