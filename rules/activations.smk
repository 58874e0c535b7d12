# Stage: activations. See src/bertgeom and README.md.
