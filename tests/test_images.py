import hashlib
import io
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import local_path
from covidspark.images import ImageDecodeError, decode_image, read_images


def _png(array, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def _gradient(h=64, w=48):
    return (np.arange(h * w).reshape(h, w) % 251).astype(np.uint8)


# ------------------------------------------------------------------ decoding


def test_decode_8bit_gray_matches_plain_pillow():
    pixels = _gradient()
    got = decode_image(_png(pixels), 32)
    expected = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.Resampling.BOX),
                          dtype=np.float32)
    assert got.shape == (32, 32, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got[:, :, 0], expected)
    np.testing.assert_array_equal(got[:, :, 0], got[:, :, 2])


def test_decode_16bit_png_keeps_the_full_range():
    # Values above 255 everywhere: truncating to the low byte (as Spark's image
    # source does) would give noise; scaling keeps the gradient.
    pixels = np.linspace(1000, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    data = _png(pixels)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    got = decode_image(data, 64, scale_hint="SCALE_FAST")[:, :, 0]
    np.testing.assert_allclose(got, pixels.astype(np.float32) * 255 / 65535, atol=1e-3)
    assert got.max() > 254 and got.min() < 5


def test_decode_rgb_and_rgba_use_luminance_and_ignore_alpha():
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 1] = 100
    luma = decode_image(_png(rgb), 40)[:, :, 0]
    # ITU-R 601-2: L = 0.299 R + 0.587 G + 0.114 B
    np.testing.assert_allclose(luma, 0.299 * 200 + 0.587 * 100, atol=1)
    rgba = np.dstack([rgb, np.full((40, 40), 7, np.uint8)])
    np.testing.assert_array_equal(decode_image(_png(rgba), 40), decode_image(_png(rgb), 40))


def test_decode_applies_exif_orientation():
    pixels = np.zeros((20, 60), np.uint8)
    pixels[:, :10] = 255  # bright left edge
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif, quality=100)
    from covidspark.images import open_image

    image = open_image(buffer.getvalue())
    assert image.size == (20, 60)  # width and height swapped
    top = np.asarray(image)[:5].mean()
    assert top > 200  # the bright left edge is now at the top


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),                                       # zero bytes
    (b"this is a text file, not an image\n" * 10, "not a decodable image"),
    (_png(_gradient(256, 256))[:400], "not a decodable image"),  # truncated PNG
])
def test_decode_errors_name_the_file(data, reason):
    with pytest.raises(ImageDecodeError, match=f"scan-17.png: {reason}"):
        decode_image(data, 32, name="scan-17.png")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 1000"):
        decode_image(_png(_gradient(64, 64)), 32, name="bomb.png", max_pixels=1000)


def test_unknown_scale_hint_lists_the_supported_ones():
    with pytest.raises(ValueError, match="SCALE_AREA_AVERAGING"):
        decode_image(_png(_gradient()), 32, scale_hint="SCALE_MAGIC")


# ------------------------------------------------------------------ reading


def test_read_class_folders(images_df, fixture_dir):
    rows = images_df.collect()
    assert images_df.columns == ["image_id", "path", "label", "patient_id", "source", "content"]
    assert len(rows) == 18
    assert sorted({r.label for r in rows}) == ["covid", "normal", "pneumonia"]
    for r in rows:
        path = local_path(r.path)
        assert os.path.dirname(path).endswith(r.label)
        with open(path, "rb") as f:
            data = f.read()
        assert bytes(r.content) == data
        assert r.image_id == hashlib.sha256(data).hexdigest()
        assert r.source == os.path.basename(fixture_dir)


def test_label_map_renames_folders_and_rejects_unknown_ones(spark, fixture_dir, tmp_path):
    root = tmp_path / "ozturk-like"
    for folder, label in [("Covid-19", "covid"), ("No_findings", "normal")]:
        shutil.copytree(os.path.join(fixture_dir, label), root / folder)
    mapping = {"Covid-19": "covid", "No_findings": "normal", "Pneumonia": "pneumonia"}
    df = read_images(spark, str(root), label_map=mapping, validate=False)
    counts = {r.label: r["count"] for r in df.groupBy("label").count().collect()}
    assert counts == {"covid": 6, "normal": 6}
    with pytest.raises(ValueError, match="'No_findings' not in label_map"):
        read_images(spark, str(root), label_map={"Covid-19": "covid"})


def test_unreadable_file_raises_an_error_naming_it(spark, fixture_dir, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(os.path.join(fixture_dir, "normal"), root / "normal")
    (root / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    (root / "normal" / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageDecodeError) as error:
        read_images(spark, str(root))
    message = str(error.value)
    assert "2 file(s) could not be decoded" in message
    assert "broken.png: not a decodable image" in message
    assert "empty.jpg: empty file" in message


def test_non_image_files_are_reported_not_read(spark, fixture_dir, tmp_path, caplog):
    root = tmp_path / "mixed"
    shutil.copytree(os.path.join(fixture_dir, "covid"), root / "covid")
    (root / "covid" / "scan-42.bmp").write_bytes(b"BM not supported")
    with caplog.at_level(logging.WARNING, logger="covidspark.images"):
        df = read_images(spark, str(root))
    assert df.count() == 6
    assert "scan-42.bmp" in caplog.text and "skipping 1 file(s)" in caplog.text


def test_missing_folder_and_empty_tree(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="Image folder not found"):
        read_images(spark, str(tmp_path / "nope"))
    (tmp_path / "empty" / "covid").mkdir(parents=True)
    (tmp_path / "empty" / "covid" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="No images"):
        read_images(spark, str(tmp_path / "empty"))


def test_read_manifest_with_relative_paths(spark, fixture_dir, tmp_path):
    manifest = tmp_path / "m.csv"
    rel = os.path.relpath(fixture_dir, tmp_path)
    manifest.write_text(
        "path,label,patient_id,source\n"
        f"{rel}/covid/syn-covid-0000.png,Covid-19,p1,cohen\n"
        f"{rel}/covid/syn-covid-0001.png,Covid-19,p1,cohen\n"
        f"{os.path.join(fixture_dir, 'normal', 'syn-normal-0002.png')},No_findings,p2,nih\n"
    )
    existing = [f for f in os.listdir(os.path.join(fixture_dir, "covid"))][:2]
    manifest.write_text(manifest.read_text()
                        .replace("syn-covid-0000.png", existing[0])
                        .replace("syn-covid-0001.png", existing[1])
                        .replace("syn-normal-0002.png",
                                 os.listdir(os.path.join(fixture_dir, "normal"))[0]))
    df = read_images(spark, manifest=str(manifest),
                     label_map={"Covid-19": "covid", "No_findings": "normal"})
    rows = sorted(df.collect(), key=lambda r: r.path)
    assert [r.label for r in rows].count("covid") == 2
    assert {r.patient_id for r in rows} == {"p1", "p2"}
    assert {r.source for r in rows} == {"cohen", "nih"}
    for r in rows:
        with open(local_path(r.path), "rb") as f:
            assert r.image_id == hashlib.sha256(f.read()).hexdigest()


def test_manifest_errors_name_rows_and_files(spark, tmp_path, fixture_dir):
    good = os.path.join(fixture_dir, "covid", os.listdir(os.path.join(fixture_dir, "covid"))[0])
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{good},covid\nmissing/scan.png,normal\n{good},\n")
    with pytest.raises(ValueError) as error:
        read_images(spark, manifest=str(manifest))
    message = str(error.value)
    assert "2 bad row(s)" in message
    assert "line 3: file not found" in message and "missing/scan.png" in message
    assert "line 4: empty path or label" in message
    (tmp_path / "cols.csv").write_text("file,label\na.png,covid\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['path'\]"):
        read_images(spark, manifest=str(tmp_path / "cols.csv"))
    (tmp_path / "dup.csv").write_text(f"path,label\n{good},covid\n{good},covid\n")
    with pytest.raises(ValueError, match="more than once"):
        read_images(spark, manifest=str(tmp_path / "dup.csv"))


def test_exactly_one_source(spark):
    with pytest.raises(ValueError, match="exactly one"):
        read_images(spark)
