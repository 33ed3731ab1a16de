"""Grad-CAM and occlusion heat maps: correct by construction, and where the evidence is."""
import json
import os

import numpy as np
import pytest
from conftest import save_head_pipeline


@pytest.fixture(scope="module")
def predictor(trained_model):
    from covidspark.serving.predictor import Predictor

    return Predictor(trained_model)


def _covid_image(fixture_dir):
    folder = os.path.join(fixture_dir, "covid")
    path = os.path.join(folder, sorted(os.listdir(folder))[0])
    with open(path, "rb") as f:
        return path, f.read()


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_heat_map_has_the_image_shape_and_is_a_normalised_map(predictor, fixture_dir, method):
    from PIL import Image

    from covidspark.serving.explain import explain, overlay_png

    path, data = _covid_image(fixture_dir)
    result, heat, image = explain(predictor, data, method=method, name=path)
    width, height = Image.open(path).size
    assert heat.shape == (height, width) and image.size == (width, height)
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    assert result["method"] == method and result["explained"] == result["label"]
    png = overlay_png(image, heat, max_side=256)
    overlay = Image.open(__import__("io").BytesIO(png))
    assert overlay.mode == "RGB" and max(overlay.size) == 256


def test_grad_cam_equals_the_class_weights_on_the_last_conv_layer(predictor, fixture_dir):
    """ResNet50 pools conv5_block3_out directly: Grad-CAM = ReLU(sum_k w_k A_k) / (h w)."""
    import keras

    from covidspark.serving.explain import class_score_weights, grad_cam

    _, data = _covid_image(fixture_dir)
    pixels = predictor.pixels(predictor.open(data))
    runner = predictor.keras_runner
    x = runner.preprocess(pixels[None].astype(np.float32))
    conv = keras.Model(runner.model.inputs,
                       runner.model.get_layer("conv5_block3_out").output)(x).numpy()[0]
    head = predictor.pipeline.head
    for index, sign in ((1, 1.0), (0, -1.0)):  # covid's score is the log-odds, normal's minus it
        weights, bias = class_score_weights(head, index)
        np.testing.assert_allclose(weights, sign * head.coefficients[0])
        expected = np.maximum(conv @ weights, 0.0) / (conv.shape[0] * conv.shape[1])
        cam = grad_cam(runner.model, "conv5_block3_out", x, weights, bias)
        assert cam.shape == (7, 7)
        np.testing.assert_allclose(cam, expected, rtol=1e-3, atol=1e-6 * np.abs(expected).max())


def test_one_pass_grad_cam_equals_predicting_then_explaining_in_two_passes(predictor,
                                                                          fixture_dir):
    """The single forward pass gives the prediction and the map the two-pass way gave."""
    from covidspark.serving.explain import (class_index, class_score_weights, explain,
                                            grad_cam, to_image_coordinates, upsample)

    for label in ("covid", "normal"):
        folder = os.path.join(fixture_dir, label)
        for name in sorted(os.listdir(folder))[:2]:
            with open(os.path.join(folder, name), "rb") as f:
                data = f.read()
            result, heat, image = explain(predictor, data, method="gradcam")
            # Two passes: features -> classifier, then Grad-CAM's own forward/backward.
            pixels = predictor.pixels(predictor.open(data))
            runner = predictor.keras_runner
            x = runner.preprocess(pixels[None].astype(np.float32))
            expected = predictor.classify(runner(pixels[None])[0])
            index = class_index(predictor, expected["label"])
            weights, bias = class_score_weights(predictor.pipeline.head, index)
            cam = grad_cam(runner.model, predictor.spec.last_conv_layer, x, weights, bias)
            want = to_image_coordinates(upsample(cam, predictor.spec.input_size), *image.size,
                                        predictor.options["crop"])
            assert result["label"] == expected["label"]
            for k, p in expected["probabilities"].items():
                assert result["probabilities"][k] == pytest.approx(p, abs=1e-6)
            np.testing.assert_allclose(heat, want, atol=1e-4)


def test_tree_models_get_occlusion_and_a_clear_refusal_of_grad_cam(features_df, tmp_path,
                                                                   fixture_dir):
    from covidspark.serving.explain import ExplainError, explain
    from covidspark.serving.predictor import Predictor

    _, path, _ = save_head_pipeline(features_df, tmp_path, "3class", "dt")
    predictor = Predictor(path)
    _, data = _covid_image(fixture_dir)
    with pytest.raises(ExplainError, match="DT classifier has none.*occlusion"):
        explain(predictor, data, method="gradcam")
    with pytest.raises(ExplainError, match="Unknown class 'flu'"):
        explain(predictor, data, label="flu")
    result, heat, _ = explain(predictor, data, label="pneumonia")
    assert result["method"] == "occlusion" and result["explained"] == "pneumonia"
    assert np.isfinite(heat).all() and heat.min() >= 0.0


# A saved Spark tree head scored outside Spark: test_predictor.py's [3class-dt] case.
@pytest.mark.same_spark_path
def test_occlusion_map_equals_spark_tree_probabilities_of_occluded_images(features_df, tmp_path,
                                                                          fixture_dir):
    """Brute force: grey out each of the 4x4 cells by hand, score the features with Spark's own
    decision tree, and compare the fall in probability with the map, cell by cell."""
    from pyspark.ml.linalg import Vectors

    from covidspark.serving.explain import occlusion_input
    from covidspark.serving.predictor import Predictor

    model, path, _ = save_head_pipeline(features_df, tmp_path, "3class", "dt")
    spark_tree = model.stages[2]
    predictor = Predictor(path)
    grid, nonzero_maps = 4, 0  # 4x4 cells: 17 + 3x16 forward passes an image
    for label in ("covid", "normal", "pneumonia"):
        folder = os.path.join(fixture_dir, label)
        with open(os.path.join(folder, sorted(os.listdir(folder))[0]), "rb") as f:
            pixels = predictor.pixels(predictor.open(f.read()))
        size = pixels.shape[0]
        edges = np.linspace(0, size, grid + 1).round().astype(int)
        occluded = []
        for i in range(grid):
            for j in range(grid):
                copy = pixels.copy()
                copy[edges[i]:edges[i + 1], edges[j]:edges[j + 1], :] = pixels.mean()
                occluded.append(copy)
        features = predictor.features(np.stack([pixels, *occluded]))
        spark_p = np.array([spark_tree.predictProbability(Vectors.dense(f)).toArray()
                            for f in features])
        for index in range(3):
            drop = np.maximum(spark_p[0, index] - spark_p[1:, index], 0.0).reshape(grid, grid)
            heat = occlusion_input(predictor, pixels, index, grid=grid)
            centres = (edges[:-1] + edges[1:]) // 2
            got = heat[np.ix_(centres, centres)]
            if drop.max() > 0:
                nonzero_maps += 1
                np.testing.assert_allclose(got, drop / drop.max(), atol=1e-5)
            else:
                assert not heat.any()
    # The tree's probabilities do move when parts of an image are hidden.
    assert nonzero_maps > 0


def _small_cnn(size):
    """A small convolutional network with seeded random weights, pooled like the backbones.

    'valid' padding: zero padding would give the corners responses of their own.
    """
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(16, 5, padding="valid", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(32, 3, padding="valid", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(32, 3, padding="valid", activation="relu", name="last_conv")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def _covid_and_normal(folder, size):
    import csv

    from covidspark.data.decoding import decode_image

    with open(os.path.join(folder, "manifest.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["label"] in ("covid", "normal")]
    pixels = []
    for row in rows:
        with open(os.path.join(folder, row["path"]), "rb") as f:
            pixels.append(decode_image(f.read(), size)[:, :, :1] / 255.0)
    return rows, np.stack(pixels).astype(np.float32)


def test_grad_cam_peaks_inside_the_synthetic_lesions_more_often_than_chance(tmp_path):
    """With features that can see the lesions, the map's peak falls on them.

    The registry's backbones with random weights do not localise (ImageNet
    weights cannot be downloaded here): their features barely separate a
    bright blob from none. This checks the Grad-CAM computation itself on a
    small real Keras network whose features do: LR trained on covid vs normal
    synthetic X-rays, maps of held-out COVID images, lesions from the manifest.
    """
    from scipy.stats import binomtest
    from sklearn.linear_model import LogisticRegression

    from covidspark.data.synthetic import synthetic
    from covidspark.serving.explain import grad_cam, upsample

    size = 128
    model = _small_cnn(size)
    train_rows, train_x = _covid_and_normal(
        synthetic(str(tmp_path / "train"), n_per_class=30, seed=0, max_size=512), size)
    test_rows, test_x = _covid_and_normal(
        synthetic(str(tmp_path / "test"), n_per_class=20, seed=3, max_size=512), size)
    features = model.predict(train_x, verbose=0)
    mean, std = features.mean(0), features.std(0) + 1e-6
    labels = np.array([r["label"] == "covid" for r in train_rows])
    lr = LogisticRegression(max_iter=5000).fit((features - mean) / std, labels)
    weights = lr.coef_[0] / std  # the score on unstandardised features, as MLlib stores it
    bias = lr.intercept_[0] - float((lr.coef_[0] * mean / std).sum())

    yy, xx = np.mgrid[0:size, 0:size]
    ny, nx = 2 * (yy + 0.5) / size - 1, 2 * (xx + 0.5) / size - 1
    hits, chance = [], []
    for row, x in zip(test_rows, test_x):
        if row["label"] != "covid":
            continue
        heat = upsample(grad_cam(model, "last_conv", x[None], weights, bias), size)
        inside = np.zeros((size, size), dtype=bool)
        for cy, cx, radius in json.loads(row["lesions"]):
            inside |= (ny - cy) ** 2 + (nx - cx) ** 2 <= radius ** 2
        peak = np.unravel_index(np.argmax(heat), heat.shape)
        hits.append(bool(inside[peak]))
        chance.append(inside.mean())
    # Lesions cover ~5 % of an image; the peak lands on one several times as often.
    assert np.mean(hits) > 2 * np.mean(chance)
    assert binomtest(sum(hits), len(hits), float(np.mean(chance)), "greater").pvalue < 0.01
