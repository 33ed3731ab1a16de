"""Train a logistic regression on deep features of chest X-rays.

    spark-submit jobs/train_lr.py --data DIR --task binary|3class \
        --model ResNet50|InceptionV3 --weights imagenet|random|PATH --out DIR

Run with --help for every flag. With no --data it trains on the embedded
synthetic data set. Exit status 0 on success, 2 on bad input, 1 on failure.
"""
import sys

from covidspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--classifier", "lr", *sys.argv[1:]]))
