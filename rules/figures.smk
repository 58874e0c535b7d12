# Stage: figures. See src/bertgeom and README.md.
