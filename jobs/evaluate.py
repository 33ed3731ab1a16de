"""spark-submit jobs/evaluate.py --model-dir RUN/model ... (see covidspark evaluate --help).

Evaluate a saved model on labelled images (--data / --manifest) and write
metrics.json, report.md and figures, e.g. to test on another source.
"""
import sys

from covidspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
