# Stage: stats. See src/bertgeom and README.md.
