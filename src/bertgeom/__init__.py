"""bert-geometry: BERT classification of SARS-CoV-2 spike genes and the geometry inside the model.

One module per workflow stage (data, tokens, train, activations, stats, figures); see README.md.
"""

from importlib.metadata import PackageNotFoundError, version

try:  # the one version number is pyproject.toml's, as installed
    __version__ = version("bertgeom")
except PackageNotFoundError:  # imported from src/ without an install (jobs run with PYTHONPATH=src)
    __version__ = "unknown"


def __getattr__(name):
    # bertgeom.explore(results_dir): the explorer's figures for notebooks; imported on first use so
    # that `import bertgeom.<module>` stays light (the workflow imports bertgeom when it parses rules).
    if name == "explore":
        from bertgeom.explorer_run import explore

        return explore
    raise AttributeError(f"module 'bertgeom' has no attribute {name!r}")
