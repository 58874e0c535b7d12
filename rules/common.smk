# Helpers shared by the rule files: config validation, paths, seeds, input functions.
import os
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../config/config.schema.yaml")

# Jobs import the library from this checkout, also inside conda environments (--sdm conda).
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH")])
)

SEEDS = config["train"]["seeds"]
CLASSES = config["classes"]


def resolve(path):
    """A config path: as given if it exists from the working directory, else from the workflow's."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return str(path)
    return str(Path(workflow.basedir) / path)


def final_outputs():
    """Everything `snakemake` (rule all) builds by default."""
    outputs = ["results/data/spike.parquet", "results/data/qc.tsv"]
    return outputs
