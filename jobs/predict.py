"""spark-submit jobs/predict.py --model-dir RUN/model ... (see covidspark predict --help).

Predict every image under --images (any layout) or of --data with a saved
model; writes path, predicted_label and one probability per class.
"""
import sys

from covidspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
