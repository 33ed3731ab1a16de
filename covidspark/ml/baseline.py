"""The shortcut baseline: logistic regression on 32x32 grayscale pixels.

On the Ozturk data such a model already reaches about 95 % binary accuracy,
because COVID-19 and normal images come from different archives (borders,
text, exposure), not because it sees pneumonia. Every report puts it beside
the deep-feature model, trained on the same split, and says so when the
model does not clearly beat it: when the paired bootstrap interval of the
accuracy difference on the same test images does not lie above 0.
"""
import numpy as np
from pyspark.ml import Transformer
from pyspark.ml.param.shared import HasInputCol, HasOutputCol, Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from covidspark.errors import InputError

BASELINE_SIZE = 32
BASELINE_NAME = "baseline: LR on 32x32 pixels"


class PixelFeaturizer(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable,
                      DefaultParamsWritable):
    """Encoded image bytes -> the ``size x size`` grayscale pixels in [0, 1] as a vector.

    Decoding is the featurizer's (same bad-file errors, 8/16-bit, DICOM);
    JPEGs are decoded in draft mode at a reduced scale, so the pass is cheap.

    Parameters
    ----------
    inputCol : str
        Binary column of encoded images (``content``).
    outputCol : str
        Vector column (default ``pixels``).
    size : int
        Side of the thumbnail (default 32).
    """

    size = Param(Params._dummy(), "size", "thumbnail side in pixels",
                 typeConverter=TypeConverters.toInt)

    def __init__(self, *, inputCol="content", outputCol="pixels", size=BASELINE_SIZE):
        super().__init__()
        self._setDefault(inputCol="content", outputCol="pixels", size=BASELINE_SIZE)
        self._set(inputCol=inputCol, outputCol=outputCol, size=size)

    def getSize(self):
        return self.getOrDefault(self.size)

    def _transform(self, dataset):
        import pandas as pd
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import functions as F
        from pyspark.sql.functions import pandas_udf

        input_col, size = self.getInputCol(), self.getSize()
        if input_col not in dataset.columns:
            raise InputError(f"PixelFeaturizer: inputCol {input_col!r} not in {dataset.columns}")
        names = F.col("path") if "path" in dataset.columns else F.lit(None).cast("string")

        @pandas_udf("array<float>")
        def thumbnails(contents: pd.Series, paths: pd.Series) -> pd.Series:
            return pd.Series([thumbnail(c, size, p or f"row {i}").ravel()
                              for i, (c, p) in enumerate(zip(contents, paths))])

        return dataset.withColumn(self.getOutputCol(),
                                  array_to_vector(thumbnails(F.col(input_col), names)))


def thumbnail(data, size=BASELINE_SIZE, name="<bytes>"):
    """``size x size`` float32 grayscale in [0, 1] (area averaging)."""
    from covidspark.data import decoding

    # JPEGs: libjpeg scales down while decoding, keeping at least twice the target.
    image = decoding.open_image(data, name, draft_size=(2 * size, 2 * size))
    return decoding.resize_gray(image, size) / np.float32(255.0)


def verdict(model_name, model_metrics, baseline_metrics, difference=None):
    """One sentence comparing the model with the baseline, and whether it is a warning.

    With ``difference`` (:func:`covidspark.evaluation.scoring.paired_accuracy`:
    the model's accuracy minus the baseline's on the same test images, with a
    paired bootstrap interval), the model *clearly* beats the baseline when that
    interval lies above 0. Without (metrics that kept no rows), when the lower
    end of the model's own accuracy interval is above the baseline's accuracy.

    Returns
    -------
    (str, bool)
        The sentence and True when the model does not clearly beat the baseline.
    """
    accuracy, base = model_metrics["accuracy"], baseline_metrics["accuracy"]
    if difference is not None:
        low, high = difference["interval"]
        said = (f"accuracy {accuracy:.3f} vs {base:.3f} on the same {model_metrics['n']} test "
                f"images: {difference['difference']:+.3f}, 95 % interval {low:+.3f} to "
                f"{high:+.3f}, paired")
        clearly = low > 0
    else:
        ci = model_metrics.get("confidence_intervals", {}).get("accuracy")
        low = ci[0] if ci else accuracy
        said = f"accuracy {accuracy:.3f}, 95 % interval from {low:.3f}, vs {base:.3f}"
        clearly = low > base
    if clearly:
        return f"{model_name} beats the 32x32-pixel baseline ({said}).", False
    return (f"**Caution: {model_name} does not clearly beat a logistic regression on 32x32 "
            f"pixels** ({said}). Much of what it learned may be the sources' look (borders, "
            f"text, exposure) rather than the lungs; test it on another source "
            f"(--test-source).", True)
