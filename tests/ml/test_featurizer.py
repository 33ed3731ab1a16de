"""The distributed featurizer against plain Keras on the same images.

Tolerance: features agree to within 1e-4 of the largest feature magnitude (float32
arithmetic in different batch compositions; observed differences are ~1e-6).
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import local_path
from covidspark.ml.featurizer import DeepImageFeaturizer

from covidspark.models.weights import resolve_weights
from covidspark.runtime.session import temporary_conf

RELATIVE_TOLERANCE = 1e-4


def plain_keras_features(model_name, paths):
    """Independent reference: Keras application + its preprocess_input + Pillow."""
    import keras

    constructor, module, size = {
        "ResNet50": (keras.applications.ResNet50, keras.applications.resnet50, 224),
        "InceptionV3": (keras.applications.InceptionV3, keras.applications.inception_v3, 299),
    }[model_name]
    model = constructor(include_top=False, weights=None, pooling="avg",
                        input_shape=(size, size, 3))
    model.load_weights(resolve_weights(model_name, "random", seed=0).path)
    batch = np.stack([
        np.asarray(Image.open(local_path(p)).convert("L").resize((size, size), Image.Resampling.BOX),
                   dtype=np.float32)[:, :, None].repeat(3, axis=2)
        for p in paths
    ])
    return model.predict(module.preprocess_input(batch), verbose=0)


def assert_features_close(got, expected):
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= RELATIVE_TOLERANCE * scale


def test_resnet50_features_equal_plain_keras(resnet_features):
    features, _ = resnet_features
    paths = sorted(features)
    got = np.stack([features[p] for p in paths])
    assert got.shape == (18, 2048)
    assert_features_close(got, plain_keras_features("ResNet50", paths))


@pytest.mark.same_spark_path  # ResNet50's, with another network
def test_inceptionv3_features_equal_plain_keras(images_df):
    featurizer = DeepImageFeaturizer(inputCol="content", outputCol="f", modelName="InceptionV3",
                                     weights="random", batchSize=5)
    rows = featurizer.transform(images_df.limit(8).repartition(3)).select("path", "f").collect()
    paths = [r.path for r in rows]
    got = np.stack([r.f.toArray() for r in rows])
    assert got.shape == (8, 2048)
    assert_features_close(got, plain_keras_features("InceptionV3", paths))


def test_partitioning_and_batch_size_do_not_change_features(images_df, resnet_features):
    features, _ = resnet_features
    featurizer = DeepImageFeaturizer(inputCol="content", modelName="ResNet50",
                                     weights="random", batchSize=7)
    rows = featurizer.transform(images_df.coalesce(1)).select("path", "features").collect()
    assert len(rows) == len(features)
    for r in rows:
        assert_features_close(r.features.toArray(), features[r.path])


def test_arrow_batches_larger_than_the_network_s_leave_the_session_alone(spark, images_df,
                                                                         resnet_features):
    # The featurizer set the session's maxRecordsPerBatch to its batchSize for good, so
    # every later pandas UDF of the user's ran 32 rows a batch. From Spark 4.0 Spark bounds
    # Arrow batches in bytes, and the workers cut each into the network's batches.
    import pyspark

    from covidspark.ml.featurizer import ARROW_RECORDS_CONF

    features, _ = resnet_features
    featurizer = DeepImageFeaturizer(inputCol="content", modelName="ResNet50",
                                     weights="random", batchSize=4)
    with temporary_conf(spark, ARROW_RECORDS_CONF, 1000):
        rows = featurizer.transform(images_df.coalesce(1)).select("path", "features").collect()
        after = spark.conf.get(ARROW_RECORDS_CONF)
    # One Arrow batch of 18 rows, run in network batches of 4.
    assert len(rows) == len(features) == featurizer.imagesFeaturized() == 18
    for r in rows:
        assert_features_close(r.features.toArray(), features[r.path])
    spark_version = tuple(int(part) for part in pyspark.__version__.split(".")[:2])
    assert after == ("1000" if spark_version >= (4, 0) else "4")


def test_model_batches_cut_arrow_batches_in_order():
    import pandas as pd

    from covidspark.ml.worker_featurize import model_batches

    arrow = [(pd.Series(range(10)), pd.Series([f"p{i}" for i in range(10)])),
             (pd.DataFrame({"height": [1, 2]}), pd.Series(["q0", "q1"]))]
    cut = list(model_batches(iter(arrow), 4))
    assert [len(values) for values, _ in cut] == [4, 4, 2, 2]
    assert list(cut[2][0]) == [8, 9] and list(cut[2][1]) == ["p8", "p9"]
    # Positions restart in each slice: decode_row reads row i of its own slice.
    assert cut[1][0].iloc[0] == 4 and cut[3][0].iloc[1]["height"] == 2


def test_decode_ahead_keeps_rows_in_order_and_counts_each_image_once(spark, images_df,
                                                                    resnet_features):
    from covidspark.ml.featurizer import DECODE_AHEAD_CONF, DECODE_THREADS_CONF

    features, _ = resnet_features
    featurizer = DeepImageFeaturizer(inputCol="content", modelName="ResNet50",
                                     weights="random", batchSize=4)
    # Network batches of 4: each partition's later batches are decoded in a thread while
    # the network runs on the earlier ones, their rows by three threads.
    with temporary_conf(spark, DECODE_AHEAD_CONF, "true"), \
            temporary_conf(spark, DECODE_THREADS_CONF, 3):
        rows = featurizer.transform(images_df.coalesce(2)).select("path", "features").collect()
    assert len(rows) == len(features) == featurizer.imagesFeaturized() == 18
    for r in rows:
        assert_features_close(r.features.toArray(), features[r.path])


def test_decode_threads_are_the_task_cores_on_a_gpu_and_one_on_a_cpu_unless_set():
    from types import SimpleNamespace

    from covidspark.errors import InputError
    from covidspark.ml.worker_featurize import decode_thread_count

    gpu, cpu = SimpleNamespace(on_gpu=True), SimpleNamespace(on_gpu=False)
    assert decode_thread_count("auto", gpu, 8) == 8
    assert decode_thread_count("auto", cpu, 8) == 1
    assert decode_thread_count("3", cpu, 1) == 3
    for bad in ("0", "two", "-1"):
        with pytest.raises(InputError, match="spark.covidspark.decodeThreads"):
            decode_thread_count(bad, cpu, 1)


def test_path_column_input_reads_files_on_the_workers(images_df, resnet_features):
    features, _ = resnet_features
    featurizer = DeepImageFeaturizer(inputCol="path", modelName="ResNet50", weights="random")
    rows = featurizer.transform(images_df.select("path").limit(4)).collect()
    for r in rows:
        assert_features_close(r.features.toArray(), features[r.path])


def test_spark_image_struct_input(spark, fixture_dir, resnet_features):
    # sparkdl's input: Spark's own image source (8-bit PNGs decode identically).
    features, _ = resnet_features
    images = (spark.read.format("image").option("pathGlobFilter", "*.png")
              .load(os.path.join(fixture_dir, "normal")))
    featurizer = DeepImageFeaturizer(inputCol="image", modelName="ResNet50", weights="random")
    rows = featurizer.transform(images).select("image.origin", "features").collect()
    assert rows
    for r in rows:
        assert_features_close(r.features.toArray(), features["file:" + os.path.normpath(local_path(r.origin))])


def test_corrupt_image_fails_with_its_path(spark):
    df = spark.createDataFrame([("file:/data/covid/broken-scan.png", bytearray(b"junk" * 10))],
                               "path string, content binary")
    featurizer = DeepImageFeaturizer(inputCol="content", modelName="ResNet50", weights="random")
    with pytest.raises(Exception, match="broken-scan.png: not a decodable image"):
        featurizer.transform(df).collect()


def test_a_row_without_an_image_is_named_for_what_it_is(spark, fixture_dir, tmp_path):
    # A null was reported as "empty file (0 bytes)", and a file Spark's image source
    # could not decode as an "unsupported Spark image struct (mode=-1 ...)".
    featurizer = DeepImageFeaturizer(inputCol="content", modelName="SmallCNN", weights="random")
    null = spark.createDataFrame([("file:/data/covid/lost.png", None)],
                                 "path string, content binary")
    with pytest.raises(Exception, match="lost.png: null content") as raised:
        featurizer.transform(null).collect()
    assert "empty file" not in str(raised.value)
    shutil.copytree(os.path.join(fixture_dir, "normal"), tmp_path / "normal")
    (tmp_path / "normal" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    images = (spark.read.format("image").option("dropInvalid", False)
              .load(str(tmp_path / "normal")))
    with pytest.raises(Exception, match="bad.png: Spark's image source could not decode"):
        featurizer.copy({featurizer.inputCol: "image"}).transform(images).collect()


def test_clear_errors_for_bad_params_and_columns(images_df):
    with pytest.raises(ValueError, match="Supported: ResNet50, InceptionV3"):
        DeepImageFeaturizer(inputCol="content", modelName="ResNet-50")
    with pytest.raises(ValueError, match="scaleHint"):
        DeepImageFeaturizer(inputCol="content", modelName="ResNet50", scaleHint="BICUBIC")
    with pytest.raises(ValueError, match="batchSize must be >= 1"):
        DeepImageFeaturizer(inputCol="content", modelName="ResNet50", batchSize=0)
    with pytest.raises(ValueError, match=r"inputCol 'image' not in the DataFrame; columns: \["):
        DeepImageFeaturizer(inputCol="image", modelName="ResNet50",
                            weights="random").transform(images_df)
    # It replaced the column without a word (pyspark.ml's transformers refuse).
    with pytest.raises(ValueError, match="outputCol 'path' already exists in the DataFrame"):
        DeepImageFeaturizer(inputCol="content", outputCol="path", modelName="ResNet50",
                            weights="random").transform(images_df)
    with pytest.raises(TypeError, match="'n' has type int; expected binary"):
        DeepImageFeaturizer(inputCol="n", modelName="ResNet50",
                            weights="random").transform(images_df.selectExpr("1 AS n"))


def test_sparkdl_api_defaults_and_params():
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features", modelName="ResNet50")
    assert featurizer.getScaleHint() == "SCALE_AREA_AVERAGING"
    assert featurizer.getWeights() == "imagenet"
    assert featurizer.getBatchSize() == 32
    featurizer.setModelName("InceptionV3").setBatchSize(8).setWeights("random")
    assert (featurizer.getModelName(), featurizer.getBatchSize()) == ("InceptionV3", 8)


def test_featurizer_saves_and_loads(tmp_path):
    featurizer = DeepImageFeaturizer(inputCol="content", outputCol="f", modelName="InceptionV3",
                                     weights="random", seed=3, batchSize=4)
    featurizer.save(str(tmp_path / "featurizer"))
    loaded = DeepImageFeaturizer.load(str(tmp_path / "featurizer"))
    for param in ("inputCol", "outputCol", "modelName", "weights", "seed", "batchSize",
                  "scaleHint"):
        assert loaded.getOrDefault(param) == featurizer.getOrDefault(param), param


def test_a_saved_featurizer_refuses_other_weights_at_the_same_path(images_df, tmp_path):
    import shutil

    from covidspark.models.weights import WeightsMismatchError, weights_sha256

    weights = tmp_path / "backbone.weights.h5"
    shutil.copy(resolve_weights("ResNet50", "random", seed=0).path, weights)
    original = weights_sha256(str(weights))
    featurizer = DeepImageFeaturizer(inputCol="content", modelName="ResNet50",
                                     weights=str(weights))
    featurizer.save(str(tmp_path / "featurizer"))
    loaded = DeepImageFeaturizer.load(str(tmp_path / "featurizer"))
    assert loaded.getOrDefault("weightsSha256") == original
    assert loaded.featureSignature()["weights_sha256"] == original

    # Another file at the same path (seed 1): refused, naming both hashes.
    shutil.copy(resolve_weights("ResNet50", "random", seed=1).path, weights)
    other = weights_sha256(str(weights))
    assert other != original
    for use in (lambda: loaded.transform(images_df.limit(1)), loaded.featureSignature):
        with pytest.raises(WeightsMismatchError) as refused:
            use()
        assert original in str(refused.value) and other in str(refused.value)
        assert str(weights) in str(refused.value)
    # Choosing the weights again is a new choice: the new file's hash is recorded.
    loaded.setWeights(str(weights))
    assert not loaded.isSet("weightsSha256")
    assert loaded.featureSignature()["weights_sha256"] == other
    loaded.transform(images_df.limit(1)).collect()
    assert loaded.getOrDefault("weightsSha256") == other


LOAD_AND_PREDICT = """
import json, sys
from pyspark.ml import PipelineModel
from covidspark.data.reading import read_images
from covidspark.runtime.session import get_spark
spark = get_spark("reload", master="local[1]")
model = PipelineModel.load(sys.argv[1])
rows = model.transform(read_images(spark, sys.argv[2])).select(
    "path", "predicted_label", "probability").collect()
json.dump({r.path: [r.predicted_label, r.probability.toArray().tolist()] for r in rows},
          open(sys.argv[3], "w"))
"""


@pytest.mark.subprocess
def test_pipeline_with_featurizer_saves_and_predicts_the_same_in_a_new_session(
        images_df, fixture_dir, tmp_path):
    from covidspark.ml.pipelines import build_pipeline, prepare_task

    data, _ = prepare_task(images_df, "3class")
    # SmallCNN: what a new session rebuilds from the saved stage does not depend on the
    # backbone (saved InceptionV3 and ResNet50 pipelines reload in test_docs.py and
    # tests/serving/test_predictor.py), and this test featurizes three times.
    model = build_pipeline("3class", "lr", modelName="SmallCNN", weights="random").fit(data)
    expected = {r.path: [r.predicted_label, r.probability.toArray().tolist()]
                for r in model.transform(data).select("path", "predicted_label",
                                                      "probability").collect()}
    model.write().overwrite().save(str(tmp_path / "model"))
    script = tmp_path / "reload.py"
    script.write_text(LOAD_AND_PREDICT)
    subprocess.run([sys.executable, str(script), str(tmp_path / "model"), fixture_dir,
                    str(tmp_path / "out.json")], check=True, timeout=600)
    with open(tmp_path / "out.json") as f:
        reloaded = json.load(f)
    assert reloaded.keys() == expected.keys()
    for path, (label, probability) in expected.items():
        assert reloaded[path][0] == label
        np.testing.assert_allclose(reloaded[path][1], probability, atol=1e-5)


# The crop happens in the worker's decode: test_resnet50_features_equal_plain_keras's path.
@pytest.mark.same_spark_path
def test_center_crop_equals_keras_on_pillow_cropped_images(images_df):
    import keras

    rows = images_df.limit(3).select("path", "content").collect()
    featurizer = DeepImageFeaturizer(inputCol="content", modelName="ResNet50", weights="random",
                                     centerCrop=0.8)
    got = {r.path: r.features.toArray()
           for r in featurizer.transform(images_df.limit(3)).select("path", "features").collect()}
    model = keras.applications.ResNet50(include_top=False, weights=None, pooling="avg")
    model.load_weights(resolve_weights("ResNet50", "random", seed=0).path)
    batch = []
    for r in rows:
        image = Image.open(local_path(r.path)).convert("L")
        w, h = image.size
        cw, ch = round(w * 0.8), round(h * 0.8)
        left, top = (w - cw) // 2, (h - ch) // 2
        image = image.crop((left, top, left + cw, top + ch)).resize((224, 224), Image.Resampling.BOX)
        batch.append(np.asarray(image, dtype=np.float32)[:, :, None].repeat(3, axis=2))
    expected = model.predict(keras.applications.resnet50.preprocess_input(np.stack(batch)),
                             verbose=0)
    assert_features_close(np.stack([got[r.path] for r in rows]), expected)
    plain = DeepImageFeaturizer(inputCol="content", modelName="ResNet50", weights="random")
    assert plain.featureSignature() != featurizer.featureSignature()
