"""Geometry statistics computed from the activation dumps (results/activations/seed{seed}/).

- `bertgeom.stats.cone`: the cone index, its sufficient statistics and the anisotropy measures
  compared with it (mean pairwise cosine, IsoScore, top principal component share, outlier dims).
- `bertgeom.stats.distribution`: the distribution of [CLS] and mean-pooled vectors per layer
  (PCA, t-SNE, linear probe, silhouette, norms, per-dimension moments).
- `bertgeom.stats.aggregate`: any tidy per-seed table -> mean and t confidence interval across seeds
  (over heads matched across seeds where the table has heads).
- `bertgeom.stats.attention`: per-head attention metrics, gate scores, K90, the per-seed tables.
- `bertgeom.stats.gates`: null-calibrated gate labels per head and per query row.
- `bertgeom.stats.null_model`: an untrained model of the same architecture (the closed gate's null).
- `bertgeom.stats.matching`: heads matched across seeds (Hungarian), label agreement.
- `bertgeom.stats.domains`: the spike-domain partition and its t-tests.
- `bertgeom.stats.directionality`: directionality of subspace selection.

Submodules are imported explicitly (`from bertgeom.stats.cone import cone_index`), so importing
this package stays cheap.
"""
