"""Train the grid {backbones} x {LR, RF, DT} x {binary, 3class} from one feature store.

    spark-submit jobs/compare.py --data DIR --label-map ozturk \
        --models ResNet50,InceptionV3 --weights imagenet|random|PATH \
        --features STORE --out DIR

Every backbone featurizes the images once; every classifier of every task is
fitted on the same split and reported beside the 32x32-pixel baseline in
DIR/comparison.md. Run with --help for every flag.
"""
import sys

from covidspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
