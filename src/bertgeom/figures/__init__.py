"""Stage: figures. The registry (registry.py) lists every figure (the catalogue: docs/figures.md);
one function per figure id in the module of its category draws it, in one theme (theme.py).

Each `make_<id>(input, params)` reads the stage tables named in its rule's input and returns a
matplotlib Figure; `draw.draw_figure` is what scripts/figure.py calls. Nothing is imported here:
rules/common.smk imports the registry every time the workflow starts, the drawing modules are heavy.
"""
