# Stage: attention patterns and directionality. See src/bertgeom/stats and README.md.
