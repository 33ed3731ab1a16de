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
    model = {"accuracy": 0.97, "confidence_intervals": {"accuracy": [0.95, 0.99]}}
    assert verdict("m", model, {"accuracy": 0.93}) == (
        "m beats the 32x32-pixel baseline: accuracy 0.970 (95 % interval from 0.950) vs 0.930.",
        False)
    sentence, warns = verdict("m", model, {"accuracy": 0.96})
    assert warns and "does not clearly beat" in sentence
