"""What the featurizer runs in each Python worker: decode, batch, forward pass, count.

The pandas UDF of :class:`covidspark.ml.featurizer.DeepImageFeaturizer`. Its
closure holds only strings and ints (cheap to pickle); the model is built once
per worker and device (:func:`covidspark.models.engines.worker_model`).
"""
import numpy as np

from covidspark.data import decoding
from covidspark.data.reading import read_bytes
from covidspark.models.engines import worker_model

#: Spark setting: decode the next Arrow batch in a thread ("true", "false", "auto").
DECODE_AHEAD_CONF = "spark.covidspark.decodeAhead"


def featurize_udf(model_name, weights_file, weights_id, kind, options, batch_size,
                  precision="float32", engine="keras", counter=None, decode_ahead="auto",
                  where=None):
    """The pandas UDF; its closure holds only strings and ints (cheap to pickle).

    With decode-ahead, a thread decodes Arrow batch k+1 while the network runs
    on batch k (Pillow and the engines release the GIL). It pays where the
    decoder would otherwise wait for the accelerator or for spare cores: on GPU
    workers and with ``spark.task.cpus`` >= 2 ("auto"); with one core per task
    the two would only contend for it.
    """

    def featurize(batches):
        import pandas as pd

        from covidspark.models.engines import task_cpus

        model = None
        pool = None
        pending = None
        ran_on = None

        def decode(values, names):
            # An engine that widens grey to three channels itself gets one channel.
            row_options = {**options, "compact": getattr(model, "accepts_gray", False)}
            return [np.stack([decode_row(kind, values, i, names.iloc[i], model.input_size,
                                          row_options) for i in range(start,
                                                                  min(start + batch_size,
                                                                      len(values)))])
                    for start in range(0, len(values), batch_size)]

        def infer(chunks, n):
            features = []
            for pixels in chunks:
                features.extend(model(pixels))
            if counter is not None:
                counter.add(n)
            if where is not None:
                where.add({ran_on: n})
            return pd.Series(features, dtype=object)

        try:
            for values, names in batches:
                if model is None:
                    import socket

                    model = worker_model(model_name, weights_file, weights_id, precision, engine)
                    ran_on = (f"{model.engine} {model.precision} "
                              f"{getattr(model, 'device', None) or 'cpu'} @ {socket.gethostname()}")
                    if decode_ahead_enabled(decode_ahead, model, task_cpus()):
                        from concurrent.futures import ThreadPoolExecutor

                        pool = ThreadPoolExecutor(1, thread_name_prefix="covidspark-decode")
                if pool is None:
                    yield infer(decode(values, names), len(values))
                    continue
                upcoming = (pool.submit(decode, values, names), len(values))
                if pending is not None:
                    yield infer(pending[0].result(), pending[1])
                pending = upcoming
            if pending is not None:
                yield infer(pending[0].result(), pending[1])
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    return iterator_udf(featurize)


def decode_ahead_enabled(setting, model, cpus):
    """Whether to decode the next batch in a thread: "true", "false" or "auto"."""
    setting = str(setting).lower()
    if setting in ("true", "false"):
        return setting == "true"
    return getattr(model, "on_gpu", False) or (cpus or 1) >= 2


def iterator_udf(func):
    """Declare ``func`` as an iterator-of-batches pandas UDF (type hints pick the kind)."""
    from typing import Iterator, Tuple

    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    func.__annotations__ = {
        "batches": Iterator[Tuple[pd.Series, pd.Series]],
        "return": Iterator[pd.Series],
    }
    return pandas_udf(func, "array<float>")


def decode_row(kind, values, i, name, size, options):
    if kind == "image":
        row = values.iloc[i]
        return decoding.decode_image_struct(
            row["height"], row["width"], row["nChannels"], row["mode"], row["data"],
            size, name=name or f"row {i} of the batch", **options,
        )
    value = values.iloc[i]
    if kind == "path":
        if value is None:
            raise decoding.ImageDecodeError(f"row {i} of the batch: null path")
        return decoding.decode_image(read_bytes(value), size, name=value, **options)
    return decoding.decode_image(value, size, name=name or f"row {i} of the batch", **options)
