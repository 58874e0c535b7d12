"""Stage 1: genomes (synthetic, NCBI, FASTA) and the spike gene cut out of them."""
