"""The 32x32 pixel baseline against Pillow, and its verdict."""
import io

import numpy as np
import pytest
from PIL import Image

from covidspark.ml.baseline import PixelFeaturizer, thumbnail, verdict
from conftest import gradient, png_bytes


def test_png_thumbnail_is_pillow_area_averaging():
    image = gradient(200, 150)
    expected = np.asarray(Image.fromarray(image).resize((32, 32), Image.BOX), np.float32) / 255
    np.testing.assert_allclose(thumbnail(png_bytes(image)), expected, atol=1e-6)


def test_jpeg_thumbnail_decoded_in_draft_mode_matches_a_full_decode():
    rng = np.random.default_rng(0)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8))
                        .resize((800, 600), Image.BICUBIC))
    buffer = io.BytesIO()
    Image.fromarray(smooth).convert("RGB").save(buffer, format="JPEG", quality=95)
    full = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L")
                      .resize((32, 32), Image.BOX), np.float32) / 255
    from covidspark.data.decoding import open_image

    # libjpeg decoded it at 1/8 scale (100x75 >= 64x64), off by ~3 grey levels on average.
    assert open_image(buffer.getvalue(), draft_size=(64, 64)).size == (100, 75)
    assert np.abs(thumbnail(buffer.getvalue()) - full).mean() < 0.02


def test_pixel_featurizer_in_spark(images_df):
    rows = PixelFeaturizer().transform(images_df).select("path", "content", "pixels").collect()
    assert len(rows) == 18
    for r in rows[:4]:
        np.testing.assert_allclose(r.pixels.toArray(), thumbnail(r.content).ravel(), atol=1e-7)
        assert r.pixels.size == 1024


def test_pixel_featurizer_names_a_bad_file(spark):
    df = spark.createDataFrame([("bad.png", b"not an image")], "path string, content binary")
    with pytest.raises(Exception, match="bad.png: not a decodable image"):
        PixelFeaturizer().transform(df).collect()


def test_verdict():
    # Metrics that kept no test rows: the model's own interval against the baseline's accuracy.
    model = {"accuracy": 0.97, "n": 100, "confidence_intervals": {"accuracy": [0.95, 0.99]}}
    assert verdict("m", model, {"accuracy": 0.93}) == (
        "m beats the 32x32-pixel baseline (accuracy 0.970, 95 % interval from 0.950, vs 0.930).",
        False)
    sentence, warns = verdict("m", model, {"accuracy": 0.96})
    assert warns and "does not clearly beat" in sentence


def test_the_verdict_pairs_model_and_baseline_on_the_same_images():
    from covidspark.evaluation.metrics import bootstrap_intervals, paired_difference

    labels = ["normal", "covid"]
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    # The baseline errs on 10 images; the model on 6 of those, and nowhere else.
    wrong = rng.choice(120, 10, replace=False)
    baseline_pred, model_pred = y.copy(), y.copy()
    baseline_pred[wrong] = 1 - y[wrong]
    model_pred[wrong[:6]] = 1 - y[wrong[:6]]
    ci = bootstrap_intervals(y, model_pred, labels, n_resamples=500, seed=0)
    model = {"accuracy": 114 / 120, "n": 120, "confidence_intervals": ci}
    baseline = {"accuracy": 110 / 120}
    difference = paired_difference(model_pred == y, baseline_pred == y, n_resamples=500)
    assert difference["difference"] == pytest.approx(4 / 120)
    # Never worse on any image: every resample's difference is >= 0, and > 0 at the 2.5 %
    # quantile. Side by side, the model's own interval reaches below the baseline's 0.917.
    assert difference["interval"][0] > 0 and ci["accuracy"][0] < 110 / 120
    sentence, warns = verdict("m", model, baseline, difference)
    assert not warns and sentence == (
        "m beats the 32x32-pixel baseline (accuracy 0.950 vs 0.917 on the same 120 test images: "
        f"+0.033, 95 % interval {difference['interval'][0]:+.3f} to "
        f"{difference['interval'][1]:+.3f}, paired).")
    assert verdict("m", model, baseline)[1]  # the side-by-side rule would have cautioned
    # The same accuracies with errors on other images: the difference could be 0.
    disjoint = y.copy()
    elsewhere = np.setdiff1d(np.arange(120), wrong)[:6]
    disjoint[elsewhere] = 1 - y[elsewhere]
    apart = paired_difference(disjoint == y, baseline_pred == y, n_resamples=500)
    assert apart["difference"] == pytest.approx(4 / 120) and apart["interval"][0] <= 0
    sentence, warns = verdict("m", model, baseline, apart)
    assert warns and "does not clearly beat" in sentence and "paired" in sentence


def test_paired_difference_matches_a_brute_force_paired_resampling():
    from sklearn.metrics import accuracy_score

    from covidspark.evaluation.metrics import paired_difference

    rng = np.random.default_rng(4)
    sizes = rng.integers(1, 4, 50)
    groups = np.repeat([f"p{i:02d}" for i in range(50)], sizes)
    y = rng.integers(0, 2, groups.size)
    a = np.where(rng.random(groups.size) < 0.9, y, 1 - y)
    b = np.where(rng.random(groups.size) < 0.8, y, 1 - y)
    got = paired_difference(a == y, b == y, groups=groups, n_resamples=300, seed=9)
    rows_of = [np.flatnonzero(groups == g) for g in sorted(set(groups))]
    draws, diffs = np.random.default_rng(9), []
    for _ in range(300):
        idx = np.concatenate([rows_of[g] for g in draws.integers(0, 50, 50)])
        diffs.append(accuracy_score(y[idx], a[idx]) - accuracy_score(y[idx], b[idx]))
    np.testing.assert_allclose(got["interval"], np.quantile(diffs, [0.025, 0.975]))
    assert got["difference"] == pytest.approx(accuracy_score(y, a) - accuracy_score(y, b))
    assert (got["resampled"], got["units"]) == ("groups", 50)
    assert paired_difference([], [], n_resamples=10) is None
