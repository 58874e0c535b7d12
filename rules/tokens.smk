# Stage: tokens. Stratified train/val/test split, k-mer vocabulary from the training split, and
# the tokenized splits (src/bertgeom/tokens.py; docs/methods.md, "Tokenization"; docs/outputs.md).


rule split_and_tokenize:
    input:
        spike="results/data/spike.parquet",
        variants=resolve(config["data"]["variants"]),
        base=tokens_base_vocab,
    output:
        train="results/tokens/train.parquet",
        val="results/tokens/val.parquet",
        test="results/tokens/test.parquet",
        tokenizer="results/tokens/tokenizer.json",
        tokenizer_config="results/tokens/tokenizer_config.json",
        special_tokens_map="results/tokens/special_tokens_map.json",
        kmer_counts="results/tokens/kmer_counts.parquet",
        token_map="results/tokens/token_map.parquet",
    log:
        "logs/split_and_tokenize/split_and_tokenize.log",
    benchmark:
        "results/benchmarks/split_and_tokenize/split_and_tokenize.tsv"
    conda:
        "../envs/bertgeom.yaml"
    params:
        tokens=SETTINGS.block("tokens"),
        classes=CLASSES,
        base_vocab=pretrained_source(),
    script:
        "../scripts/split_and_tokenize.py"
