"""bert-geometry: BERT classification of SARS-CoV-2 spike genes and the geometry inside the model.

One module per workflow stage (data, tokens, train, activations, stats, figures); see README.md.
"""

__version__ = "0.1.0"
