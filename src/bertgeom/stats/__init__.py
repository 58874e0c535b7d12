"""Geometry statistics computed from the activation dumps (results/activations/seed{seed}/).

- `bertgeom.stats.cone`: the cone index, its sufficient statistics and the anisotropy measures
  compared with it (mean pairwise cosine, IsoScore, top principal component share, outlier dims).
- `bertgeom.stats.distribution`: the distribution of [CLS] and mean-pooled vectors per layer
  (PCA, t-SNE, linear probe, silhouette, norms, per-dimension moments).
- `bertgeom.stats.aggregate`: any tidy per-seed table -> mean and t confidence interval across seeds.

Submodules are imported explicitly (`from bertgeom.stats.cone import cone_index`), so importing
this package stays cheap.
"""
