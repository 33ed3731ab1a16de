"""Fine-tune the network itself across the cluster, evaluate and save it like train_lr.py.

    spark-submit jobs/finetune.py --data DIR --task binary|3class \
        --model ResNet50|InceptionV3|SmallCNN --weights imagenet|random|PATH \
        --head-epochs 3 --finetune-epochs 3 --num-processes 2 [--cluster] [--gpu] --out DIR

Run with --help for every flag. With no --data it trains on the embedded
synthetic data set. Rerun the same command after a kill: it resumes from the
last epoch's checkpoint in --out. Exit status 0 on success, 2 on bad input,
1 on failure.
"""
import sys

from covidspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
