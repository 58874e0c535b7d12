# Stage: tokens. See src/bertgeom and README.md.
