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
#: Spark setting: threads that decode a batch's rows ("auto" or a number).
DECODE_THREADS_CONF = "spark.covidspark.decodeThreads"


def featurize_udf(model_name, weights_file, weights_id, kind, options, batch_size,
                  precision="float32", engine="keras", counter=None, decode_ahead="auto",
                  where=None, decode_threads="auto"):
    """The pandas UDF; its closure holds only strings and ints (cheap to pickle).

    With decode-ahead, a thread decodes Arrow batch k+1 while the network runs
    on batch k (Pillow and the engines release the GIL). It pays where the
    decoder would otherwise wait for the accelerator or for spare cores: on GPU
    workers and with ``spark.task.cpus`` >= 2 ("auto"); with one core per task
    the two would only contend for it. ``decode_threads`` threads decode a
    batch's rows (see :func:`decode_thread_count`).
    """

    def featurize(batches):
        import pandas as pd

        from covidspark.models.engines import task_cpus

        model = None
        pool = None
        row_pool = None
        pending = None
        ran_on = None

        def decode(values, names):
            # An engine that widens grey to three channels itself gets one channel.
            row_options = {**options, "compact": getattr(model, "accepts_gray", False)}

            def one(i):
                return decode_row(kind, values, i, names.iloc[i], model.input_size, row_options)

            return np.stack(list(row_pool.map(one, range(len(values)))) if row_pool is not None
                            else [one(i) for i in range(len(values))])

        def infer(pixels):
            features = list(model(pixels))
            if counter is not None:
                counter.add(len(features))
            if where is not None:
                where.add({ran_on: len(features)})
            return pd.Series(features, dtype=object)

        try:
            for values, names in model_batches(batches, batch_size):
                if model is None:
                    import socket

                    model = worker_model(model_name, weights_file, weights_id, precision, engine)
                    ran_on = (f"{model.engine} {model.precision} "
                              f"{getattr(model, 'device', None) or 'cpu'} @ {socket.gethostname()}")
                    from concurrent.futures import ThreadPoolExecutor

                    if decode_ahead_enabled(decode_ahead, model, task_cpus()):
                        pool = ThreadPoolExecutor(1, thread_name_prefix="covidspark-decode")
                    threads = decode_thread_count(decode_threads, model, task_cpus())
                    if threads > 1:
                        row_pool = ThreadPoolExecutor(threads,
                                                      thread_name_prefix="covidspark-rows")
                if pool is None:
                    yield infer(decode(values, names))
                    continue
                upcoming = pool.submit(decode, values, names)
                if pending is not None:
                    yield infer(pending.result())
                pending = upcoming
            if pending is not None:
                yield infer(pending.result())
        finally:
            for executor in (pool, row_pool):
                if executor is not None:
                    executor.shutdown(wait=True)

    return iterator_udf(featurize)


def model_batches(arrow_batches, batch_size):
    """Spark's Arrow batches, ``(values, names)``, cut into the network's batches.

    Spark sizes its Arrow batches (``spark.sql.execution.arrow.maxRecordsPerBatch``,
    and from Spark 4.0 ``maxBytesPerBatch``, 64 MB in 4.3): thousands of small JPEGs
    can come in one. Decoding a whole batch at once would hold thousands of
    decoded images; a slice of ``batch_size`` rows is decoded, run and released
    before the next (two with decode-ahead).
    """
    for values, names in arrow_batches:
        for start in range(0, len(values), batch_size):
            yield (values.iloc[start:start + batch_size].reset_index(drop=True),
                   names.iloc[start:start + batch_size].reset_index(drop=True))


def decode_ahead_enabled(setting, model, cpus):
    """Whether to decode the next batch in a thread: "true", "false" or "auto"."""
    setting = str(setting).lower()
    if setting in ("true", "false"):
        return setting == "true"
    return getattr(model, "on_gpu", False) or (cpus or 1) >= 2


def decode_thread_count(setting, model, cpus):
    """Threads that decode one batch's rows: a number, or "auto".

    "auto": the task's cores on a GPU task (the GPU waits for the decoder, and
    Pillow releases the GIL while it decodes and resizes), one on a CPU task
    (the engine's own threads use those cores).
    """
    setting = str(setting).lower()
    if setting != "auto":
        if not setting.isdigit() or int(setting) < 1:
            from covidspark.errors import InputError

            raise InputError(f"{DECODE_THREADS_CONF}={setting!r}: expected 'auto' or a "
                             f"whole number >= 1")
        return int(setting)
    return max(1, cpus or 1) if getattr(model, "on_gpu", False) else 1


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
