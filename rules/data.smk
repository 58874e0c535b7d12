# Stage: data. See src/bertgeom and README.md.
