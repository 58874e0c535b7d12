# Stage: data. Genomes from config data.source (synthetic | ncbi | fasta), then the spike gene cut
# out of each by alignment to the reference, with QC (src/bertgeom/data; docs/usage.md, "Data";
# docs/outputs.md).


rule download:
    input:
        unpack(download_inputs),
    output:
        fasta="results/data/genomes.fasta",
        manifest="results/data/manifest.tsv",
    log:
        "logs/download/download.log",
    benchmark:
        "results/benchmarks/download/download.tsv"
    conda:
        "../envs/bertgeom.yaml"
    params:
        classes=CLASSES,
        data=data_params(),
        fasta=dict(sorted(data_fasta_files().items())),
        cache_dir="results/data/ncbi_cache",
        ncbi_run=SETTINGS.execution("data.ncbi"),
    script:
        "../scripts/download.py"


rule extract_spike:
    input:
        genomes="results/data/genomes.fasta",
        manifest="results/data/manifest.tsv",
        reference=resolve(config["data"]["reference"]),
    output:
        spike="results/data/spike.parquet",
        qc="results/data/qc.tsv",
    log:
        "logs/extract_spike/extract_spike.log",
    benchmark:
        "results/benchmarks/extract_spike/extract_spike.tsv"
    conda:
        "../envs/bertgeom.yaml"
    threads: 4
    params:
        qc=SETTINGS.block("qc"),
        classes=CLASSES,
    script:
        "../scripts/extract_spike.py"
