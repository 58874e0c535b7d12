"""Geometry statistics computed from the activation dumps (results/activations/seed{seed}/{checkpoint}/).

- `bertgeom.stats.cone`: the cone index, its sufficient statistics and the anisotropy measures
  compared with it (mean pairwise cosine, IsoScore, top principal component share, outlier dims).
- `bertgeom.stats.distribution`: the distribution of [CLS] and mean-pooled vectors per layer
  (PCA, t-SNE, linear probe, silhouette, norms, per-dimension moments).
- `bertgeom.stats.attention`: attention patterns of the subset's matrices (bertgeom.measures,
  cluster score, singular values), the gate scores, K90 samples, the per-seed tables.
- `bertgeom.stats.gates`: null-calibrated gate labels per head and per query row.
- `bertgeom.stats.null_model`: an untrained model of the same architecture (the closed gate's null).
- `bertgeom.stats.matching`: heads matched across seeds (Hungarian), agreement of gate labels.
- `bertgeom.stats.domains`: the spike-domain partition and its t-tests.
- `bertgeom.stats.directionality`: directionality of subspace selection per head, from the
  weights (W_Q, W_K, W_V, W_O) and from the subset's data.
- `bertgeom.stats.aggregate`: any tidy per-seed table -> mean and t confidence interval across seeds
  (over heads matched across seeds where the table has heads).

The measures shared with the activation dump live in `bertgeom.measures`, the stage and hook names
in `bertgeom.hooks`, the table helpers (iter_batches, require_columns, class_name) in `bertgeom.io`.
Submodules are imported explicitly (`from bertgeom.stats.cone import cone_index`), so importing
this package stays cheap.
"""
