"""Featurize chest X-rays into a feature store (Parquet keyed by image and featurizer).

    spark-submit jobs/featurize.py --data DIR --model ResNet50 --weights imagenet \
        --features STORE

A rerun computes only the images the store lacks, and reads only the files it
has not read before (same path, size and modification time); the train jobs
read the store with --features STORE. Run with --help for every flag.
"""
import sys

from covidspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["featurize", *sys.argv[1:]]))
