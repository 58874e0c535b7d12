# Stage: train. See src/bertgeom and README.md.
