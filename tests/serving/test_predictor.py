"""The Spark-free single-image predictor gives the Spark pipeline's results."""
import json

import numpy as np
import pytest
from conftest import save_head_pipeline as _saved_pipeline


@pytest.mark.parametrize("task, classifier, threshold", [
    ("binary", "lr", 0.3), ("3class", "lr", None), ("binary", "rf", 0.4), ("3class", "rf", None),
    ("binary", "dt", None), ("3class", "dt", None),
])
def test_local_heads_equal_spark_on_the_same_features(features_df, tmp_path, task, classifier,
                                                      threshold):
    from pyspark.ml.functions import vector_to_array

    from covidspark.serving.local_model import load_pipeline

    model, path, rows = _saved_pipeline(features_df, tmp_path, task, classifier, threshold)
    spark_rows = model.stages[1:]  # the head alone: the features are already there
    from pyspark.ml import PipelineModel

    predicted = PipelineModel(stages=spark_rows).transform(rows).select(
        "features", "predicted_label", vector_to_array("probability").alias("p")).collect()
    local = load_pipeline(path)
    assert local.head.kind == classifier
    assert local.covid_threshold == (threshold if task == "binary" and threshold else
                                     (0.5 if task == "binary" else None))
    for row in predicted:
        probability, index = local.head.predict(row.features.toArray())
        np.testing.assert_allclose(probability, row.p, rtol=1e-9, atol=1e-12)
        assert local.labels[index] == row.predicted_label


def test_predictor_equals_the_spark_pipeline_end_to_end(spark, trained_model, images_df,
                                                        resnet_features, fixture_dir):
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array

    from covidspark.serving.predictor import Predictor
    from conftest import local_path

    predictor = Predictor(trained_model)
    assert predictor.labels == ["normal", "covid"] and predictor.pipeline.covid_threshold == 0.4
    spark_rows = PipelineModel.load(trained_model).transform(images_df).select(
        "path", "content", "predicted_label", vector_to_array("probability").alias("p")).collect()
    features, _ = resnet_features
    for row in spark_rows:
        # Decoding and the backbone: the same features as the featurizer computed in Spark.
        pixels = predictor.pixels(predictor.open(row.content, row.path))
        np.testing.assert_allclose(predictor.features(pixels)[0], features[row.path],
                                   rtol=1e-4, atol=1e-4)
        result = predictor.predict_path(local_path(row.path))
        assert result["label"] == row.predicted_label, row.path
        np.testing.assert_allclose([result["probabilities"][k] for k in predictor.labels], row.p,
                                   atol=1e-5)
        assert result["threshold"] == 0.4 and result["model_id"] == predictor.model_id
        assert set(result["timing_ms"]) == {"decode", "features", "classify"}


def test_predictor_refuses_weights_other_than_the_models(trained_model, tmp_path):
    import glob
    import shutil

    from covidspark.models.weights import WeightsMismatchError, resolve_weights
    from covidspark.serving.predictor import Predictor

    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    [metadata] = glob.glob(str(model / "stages" / "*DeepImageFeaturizer*" / "metadata" / "part-*"))
    with open(metadata) as f:
        stage = json.load(f)
    actual = resolve_weights("ResNet50", "random", seed=0).sha256
    # Training recorded the hash of the weights it used.
    assert stage["paramMap"]["weightsSha256"] == actual
    # As if the model had been made with another file at the same path.
    stage["paramMap"]["weightsSha256"] = "0" * 64
    with open(metadata, "w") as f:
        json.dump(stage, f)
    with pytest.raises(WeightsMismatchError, match=f"sha256 {actual}.*sha256 {'0' * 64}"):
        Predictor(str(model))


def test_predictor_refuses_bad_input_clearly(trained_model, tmp_path):
    from covidspark.data.decoding import ImageDecodeError
    from covidspark.serving.local_model import ModelFormatError, load_pipeline
    from covidspark.serving.predictor import Predictor

    predictor = Predictor(trained_model, max_pixels=1000)
    with pytest.raises(ImageDecodeError, match="upload.png: empty file"):
        predictor.predict(b"", name="upload.png")
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 1000"):
        from conftest import gradient, png_bytes

        predictor.predict(png_bytes(gradient(64, 48)))
    with pytest.raises(FileNotFoundError, match="No saved model"):
        load_pipeline(str(tmp_path))
    (tmp_path / "metadata").mkdir()
    with pytest.raises(ModelFormatError, match="metadata/part-"):
        load_pipeline(str(tmp_path))
