import contextlib
import csv
import hashlib
import io
import logging
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import classic_only, local_path, persistent_rdds, require_module
from conftest import gradient as _gradient
from conftest import png_bytes as _png
from covidspark.data.reading import IngestError, read_images
from covidspark.errors import InputError, InputNotFoundError


# ------------------------------------------------------------------ reading


def test_read_class_folders(images_df, fixture_dir):
    rows = images_df.collect()
    assert images_df.columns == ["image_id", "path", "label", "patient_id", "source", "content",
                                 "info"]
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


def test_the_ingest_pass_records_what_pillow_sees_from_one_decode(images_df):
    """Size, mode, bit depth and the baseline thumbnail, against plain Pillow."""
    from covidspark.data.hashing import hex_to_signed64

    for r in images_df.select("path", "info").collect():
        with Image.open(local_path(r.path)) as image:
            image.load()
            info = r.info
            assert info.error is None
            assert (info.width, info.height, info.mode) == (*image.size, image.mode), r.path
            assert info.format == image.format and info.bits == 8
            # Area averaging of the full decode, in [0, 1], row-major.
            expected = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BOX),
                                  dtype=np.float32) / 255
        np.testing.assert_allclose(np.asarray(info.thumbnail).reshape(32, 32), expected,
                                   atol=1e-6, err_msg=r.path)
        assert len(info.phash) == 16 and info.phash64 == hex_to_signed64(info.phash)


def test_rows_the_pass_does_not_decode_leave_the_others_hashes_exact(spark, fixture_dir):
    """A batch that mixes decoded images with rows it does not decode (no bytes, a
    broken file): the 64-bit hashes stay exact. Pandas made such a column float64,
    and every hash lost its low bits on the way to Spark's long."""
    from covidspark.data.ingest import inspect_images

    folder = os.path.join(fixture_dir, "normal")
    names = sorted(os.listdir(folder))
    rows = [(name, open(os.path.join(folder, name), "rb").read()) for name in names]
    rows[1:1] = [("no bytes", None), ("broken.png", b"not an image")]
    df = spark.createDataFrame(rows, "path string, content binary").coalesce(1)
    info = {r.path: r.info for r in inspect_images(df).select("path", "info").collect()}
    for name in names:
        assert info[name].error is None, name
        # Independent of covidspark's conversion: the hex digest read as a signed long.
        expected = int.from_bytes(bytes.fromhex(info[name].phash), "big", signed=True)
        assert info[name].phash64 == expected, name
        with Image.open(os.path.join(folder, name)) as image:
            assert (info[name].width, info[name].height) == image.size, name
    assert info["no bytes"].phash64 is None and info["no bytes"].error is None
    assert info["broken.png"].phash64 is None and info["broken.png"].error


def test_images_a_feature_store_holds_are_hashed_but_not_decoded(spark, fixture_dir, tmp_path):
    """``stored_ids``: those images were decoded when stored; only the others are now."""
    root = tmp_path / "tree"
    shutil.copytree(os.path.join(fixture_dir, "normal"), root / "normal")
    # A truncated file fails the ingest decode, so it can only pass here undecoded.
    (root / "normal" / "truncated.png").write_bytes(_png(_gradient(256, 256))[:300])
    digests = {name: hashlib.sha256((root / "normal" / name).read_bytes()).hexdigest()
               for name in os.listdir(root / "normal")}
    stored_names = sorted(n for n in digests if n != "truncated.png")[:3] + ["truncated.png"]
    stored = spark.createDataFrame([(digests[n],) for n in stored_names], "image_id string")
    images = read_images(spark, str(root), stored_ids=stored)
    rows = {r.path.rsplit("/", 1)[-1]: r for r in
            images.select("image_id", "path", "content", "info").collect()}
    assert rows.keys() == digests.keys()  # every image is still listed, with its id
    for name, row in rows.items():
        assert row.image_id == digests[name]
        if name in stored_names:
            assert row.content is None and row.info.width is None and row.info.phash is None
        else:
            assert bytes(row.content) == (root / "normal" / name).read_bytes()
            with Image.open(root / "normal" / name) as image:
                assert (row.info.width, row.info.height) == image.size
    # Without it the truncated file is decoded, and refused.
    with pytest.raises(IngestError, match="truncated.png"):
        read_images(spark, str(root))


def _bytes_read_from_local_files(spark):
    """Bytes this JVM has read through Hadoop's ``file:`` filesystem so far."""
    statistics = spark._jvm.org.apache.hadoop.fs.FileSystem.getAllStatistics()
    return sum(s.getBytesRead() for s in statistics if s.getScheme() == "file")


@classic_only("counts the bytes the executors read through the JVM's Hadoop statistics")
@pytest.mark.parametrize("layout", ["folders", "manifest"])
def test_classes_a_task_drops_are_counted_but_never_read(spark, fixture_dir, tmp_path, layout):
    """``inspect_labels``: a binary task neither reads, decodes nor holds the pneumonia images."""
    root = tmp_path / "tree"
    for label, folder in (("covid", "COVID 19"), ("normal", "normal"),
                          ("pneumonia", "pneumonia")):
        shutil.copytree(os.path.join(fixture_dir, label), root / folder)
    (root / "pneumonia" / "truncated.png").write_bytes(_png(_gradient(256, 256))[:300])
    (root / "normal" / "empty.png").write_bytes(b"")  # Spark's scan skips it; it must not
    label_map = {"COVID 19": "covid", "normal": "normal", "pneumonia": "pneumonia"}
    on_disk = {label_map[f]: sorted(os.listdir(root / f)) for f in label_map}
    task_bytes = sum(os.path.getsize(root / f / n) for f in ("COVID 19", "normal")
                     for n in os.listdir(root / f))
    if layout == "folders":
        source = dict(path=str(root))
    else:
        manifest = tmp_path / "m.csv"
        with open(manifest, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows([f"tree/{folder}/{n}", folder] for folder in label_map
                             for n in os.listdir(root / folder))
        source = dict(manifest=str(manifest))
    before = _bytes_read_from_local_files(spark)
    read = read_images(spark, label_map=label_map, inspect_labels=("covid", "normal"),
                       strict=False, **source)
    rows = read.images.select("image_id", "path", "label", "content", "info").collect()
    # Each task image read once, by the scan; not one byte of the pneumonia files.
    assert _bytes_read_from_local_files(spark) - before == task_bytes
    # Every image is a row but the empty one, a reject (read: it has no bytes).
    assert {label: sorted(r.path.rsplit("/", 1)[-1] for r in rows if r.label == label)
            for label in on_disk} == {label: [n for n in names if n != "empty.png"]
                                      for label, names in on_disk.items()}
    assert [r.path.rsplit("/", 1)[-1] for r in read.rejects.collect()] == ["empty.png"]
    assert read.total == sum(map(len, on_disk.values()))
    for r in rows:
        if r.label == "pneumonia":
            assert r.image_id is None and r.content is None and r.info.width is None, r.path
        else:
            data = (root / local_path(r.path).split("/tree/", 1)[1]).read_bytes()
            assert r.image_id == hashlib.sha256(data).hexdigest(), r.path
            assert bytes(r.content) == data and r.info.width > 0, r.path
    # Inspecting every class finds the broken pneumonia file.
    with pytest.raises(IngestError, match="truncated.png"):
        read_images(spark, label_map=label_map, **source)


def test_a_task_whose_classes_are_all_missing_is_named_not_a_spark_error(spark, fixture_dir,
                                                                         tmp_path):
    """Only a dropped class on disk: nothing to read; the task's own check names the class."""
    from covidspark.ml.pipelines import prepare_task

    root = tmp_path / "tree"
    shutil.copytree(os.path.join(fixture_dir, "pneumonia"), root / "pneumonia")
    images = read_images(spark, str(root), inspect_labels=("covid", "normal"))
    rows = images.select("image_id", "label", "content").collect()
    assert len(rows) == len(os.listdir(root / "pneumonia"))
    assert all(r.label == "pneumonia" and r.image_id is None and r.content is None
               for r in rows)
    with pytest.raises(InputError, match=r"none labelled \['normal', 'covid'\]"):
        prepare_task(images, "binary")


def test_label_map_renames_folders(spark, fixture_dir, tmp_path):
    root = tmp_path / "ozturk-like"
    for folder, label in [("Covid-19", "covid"), ("No_findings", "normal")]:
        shutil.copytree(os.path.join(fixture_dir, label), root / folder)
    mapping = {"Covid-19": "covid", "No_findings": "normal", "Pneumonia": "pneumonia"}
    df = read_images(spark, str(root), label_map=mapping, validate=False)
    counts = {r.label: r["count"] for r in df.groupBy("label").count().collect()}
    assert counts == {"covid": 6, "normal": 6}
    with pytest.raises(IngestError, match="folder 'No_findings' not in label_map"):
        read_images(spark, str(root), label_map={"Covid-19": "covid"})
    # No folder named by the map (the ozturk map on already-renamed folders): one clear
    # error naming the folders found and the names the map knows, not a Spark type error.
    with pytest.raises(InputError, match=r"folders 'Covid-19', 'No_findings'.*knows 'COVID'"):
        read_images(spark, str(root), label_map={"COVID": "covid"}, strict=False)


def _bad_tree(fixture_dir, root):
    """A class folder with one file of every bad kind beside six good images."""
    shutil.copytree(os.path.join(fixture_dir, "normal"), root / "normal")
    bad = root / "normal"
    (bad / "empty.png").write_bytes(b"")                                         # zero bytes
    (bad / "truncated.png").write_bytes(_png(_gradient(256, 256))[:300])        # truncated
    (bad / "notes.png").write_text("a text file named .png\n" * 20)            # not an image
    gif = io.BytesIO()
    Image.fromarray(_gradient(16, 16)).save(gif, format="GIF")
    (bad / "animated.jpg").write_bytes(gif.getvalue())                         # unsupported format
    (bad / "scan-42.bmp").write_bytes(b"BM not supported")                      # unsupported type
    big = io.BytesIO()
    Image.new("L", (3000, 3000)).save(big, format="PNG")
    (bad / "bomb.png").write_bytes(big.getvalue())                              # over max_pixels
    (root / "Lateral").mkdir()
    shutil.copy(os.path.join(fixture_dir, "covid", os.listdir(os.path.join(fixture_dir, "covid"))[0]),
                root / "Lateral" / "side.png")                                  # unknown label
    return {"empty.png": "empty file", "truncated.png": "not a decodable image",
            "notes.png": "not a decodable image", "animated.jpg": "unsupported format GIF",
            "scan-42.bmp": "unsupported file type '.bmp'", "bomb.png": "exceeds the limit",
            "side.png": "folder 'Lateral' not in label_map"}


LABELS = {"normal": "normal", "covid": "covid"}


def test_strict_read_fails_naming_every_bad_file(spark, fixture_dir, tmp_path):
    expected = _bad_tree(fixture_dir, tmp_path / "bad")
    with pytest.raises(IngestError) as error:
        read_images(spark, str(tmp_path / "bad"), label_map=LABELS, max_pixels=5_000_000)
    message = str(error.value)
    assert f"{len(expected)} of {6 + len(expected)} file(s) or row(s) rejected" in message
    for name, reason in expected.items():
        line = next(l for l in message.splitlines() if name in l)
        assert reason in line, line
    assert len(error.value.rejects) == len(expected)


def test_lenient_read_returns_rejects_and_loses_nothing(spark, fixture_dir, tmp_path):
    expected = _bad_tree(fixture_dir, tmp_path / "bad")
    kept_before = persistent_rdds(spark)  # None under Connect: nothing to compare
    result = read_images(spark, str(tmp_path / "bad"), label_map=LABELS, strict=False,
                         max_pixels=5_000_000)
    rejects = {r.path.rsplit("/", 1)[-1]: r.reason for r in result.rejects.collect()}
    assert rejects.keys() == expected.keys()
    for name, reason in expected.items():
        assert reason in rejects[name]
    assert result.images.count() == result.accepted == 6
    assert result.accepted + result.rejected == result.total == 6 + len(expected)
    # The images are a filter over the ingest pass's table: the result frees that table.
    result.unpersist(blocking=True)
    assert persistent_rdds(spark) == kept_before


@classic_only("Connect has no accumulators for a progress line to poll")
def test_the_ingest_pass_says_how_many_files_it_has_checked(spark, fixture_dir, tmp_path,
                                                             caplog):
    import shutil

    folder = tmp_path / "xrays"
    shutil.copytree(fixture_dir, folder)
    (folder / "covid" / "broken.png").write_bytes(b"not a png")  # checked, and counted
    on_disk = sum(name.lower().endswith((".png", ".jpg", ".jpeg"))
                  for _, _, files in os.walk(folder) for name in files)
    with caplog.at_level(logging.INFO, logger="covidspark.runtime.progress"):
        result = read_images(spark, str(folder), strict=False)
    assert result.rejected == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("read and check")]
    assert lines and lines[-1].startswith(f"read and check: {on_disk}/{on_disk} files (100.0 %)")
    result.unpersist()


def test_names_that_need_encoding_in_a_uri_are_read_once(spark, fixture_dir, tmp_path):
    # Public sets name classes "Viral Pneumonia" or "COVID 19": Spark lists such files
    # percent-encoded and reads them decoded. Compared as they come, every such file
    # was "unread", so it was added again as an empty file: a strict read failed on a
    # good set, and a lenient one counted every file twice.
    root = tmp_path / "spaced"
    good = {"COVID 19/a 1.png": 10, "COVID 19/100%.png": 20, "Viral Pneumonia/b#2 é.png": 30}
    for name, value in good.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png(_gradient(40, 40) // 2 + value))
    (root / "Viral Pneumonia" / "empty 3.png").write_bytes(b"")
    on_disk = {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs}
    assert len(on_disk) == 4

    result = read_images(spark, str(root), strict=False)
    assert (result.total, result.rejected) == (4, 1)
    images = {local_path(r.path): r for r in result.images.collect()}
    assert set(images) == {str(root / name) for name in good}
    for path, row in images.items():
        assert row.label == os.path.basename(os.path.dirname(path))
        with open(path, "rb") as f:
            assert row.image_id == hashlib.sha256(f.read()).hexdigest()
    [reject] = result.rejects.collect()
    assert local_path(reject.path) == str(root / "Viral Pneumonia" / "empty 3.png")
    assert "empty file" in reject.reason
    # The strict read names only the one bad file.
    with pytest.raises(IngestError, match="1 of 4 file") as error:
        read_images(spark, str(root))
    assert "empty 3.png" in str(error.value) and "a 1.png" not in str(error.value)
    # A manifest of the same files: the same images and the same one reject.
    manifest = tmp_path / "spaced.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(sorted((p, os.path.basename(os.path.dirname(p))) for p in on_disk))
    listed = read_images(spark, manifest=str(manifest), strict=False)
    assert (listed.total, listed.rejected) == (4, 1)
    assert {local_path(r.path) for r in listed.images.collect()} == set(images)
    [reject] = listed.rejects.collect()
    assert "empty 3.png" in reject.path and "empty file" in reject.reason


def test_a_manifest_names_files_with_glob_characters_literally(spark, tmp_path):
    # Spark globs the paths it loads: "scan[1].png" meant scan1.png, and "a{b}.png"
    # failed the whole read with Spark's PATH_NOT_FOUND.
    folder = tmp_path / "normal"
    folder.mkdir()
    names = ["scan[1].png", "scan1.png", "a{b}.png", "c*.png"]
    for i, name in enumerate(names):
        (folder / name).write_bytes(_png(_gradient(32, 32) // 2 + 20 * i))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"normal/{n},normal\n" for n in names
                                                 if n != "scan1.png"))
    result = read_images(spark, manifest=str(manifest), strict=False)
    assert (result.total, result.rejected) == (3, 0)
    rows = {local_path(r.path): r.image_id for r in result.images.collect()}
    assert set(rows) == {str(folder / n) for n in names if n != "scan1.png"}
    for path, image_id in rows.items():
        with open(path, "rb") as f:
            assert image_id == hashlib.sha256(f.read()).hexdigest(), path


def test_names_spark_hides_are_rejected_with_the_reason_in_a_manifest(spark, tmp_path):
    # Spark's file sources skip "_x" and ".x" even when a path names them; the
    # reject said only "not among the files Spark listed".
    (tmp_path / "normal").mkdir()
    (tmp_path / "__MACOSX").mkdir()
    for i, name in enumerate(["normal/a.png", "normal/_b.png", "normal/.c.png",
                              "__MACOSX/._a.png"]):
        (tmp_path / name).write_bytes(_png(_gradient(32, 32) // 2 + 40 * i))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nnormal/a.png,normal\nnormal/_b.png,normal\n"
                        "normal/.c.png,normal\n")
    result = read_images(spark, manifest=str(manifest), strict=False)
    assert (result.total, result.rejected) == (3, 2)
    reasons = {r.path.rsplit("/", 1)[1]: r.reason for r in result.rejects.collect()}
    assert set(reasons) == {"_b.png", ".c.png"}
    assert all("name starts with '_' or '.' (hidden)" in r for r in reasons.values()), reasons
    # A folder read reports them as well; macOS's __MACOSX/._a.png is not an image.
    folder = read_images(spark, str(tmp_path), strict=False)
    assert (folder.total, folder.rejected) == (3, 2)


def test_a_folder_read_reports_the_images_spark_hides_and_reads_the_rest(spark, tmp_path):
    # Spark's folder listing skipped "_x.png", ".x.png" and everything under
    # "_old/" without a word: chest X-rays lost, and accepted + rejected fell short
    # of the files there. A plain os.walk is the reference for what is there.
    root = tmp_path / "set"
    names = ["covid/a.png", "covid/_b.png", "covid/.c.jpg", "covid/_old/d.png",
             "_normal/e.png", "normal/f.png", "normal/_g.jpg",
             # not images, or macOS's metadata: left out quietly, as before
             "normal/._f.png", "__MACOSX/normal/._f.png", "_SUCCESS", "covid/.DS_Store",
             "normal/_notes.txt"]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png(_gradient(32, 32) // 2 + 9 * i))
    on_disk = sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                     for d, _, fs in os.walk(root) for f in fs)
    assert len(on_disk) == len(names)
    hidden = {"covid/_b.png", "covid/.c.jpg", "covid/_old/d.png", "_normal/e.png",
              "normal/_g.jpg"}
    result = read_images(spark, str(root), strict=False)
    read = sorted(local_path(r.path)[len(str(root)) + 1:] for r in result.images.collect())
    assert read == ["covid/a.png", "normal/f.png"]
    reasons = {local_path(r.path)[len(str(root)) + 1:]: r.reason
               for r in result.rejects.collect()}
    assert set(reasons) == hidden
    assert (result.total, result.rejected) == (len(read) + len(hidden), len(hidden))
    assert "name starts with '_' or '.' (hidden); rename it" in reasons["covid/_b.png"]
    assert "inside folder '_old'" in reasons["covid/_old/d.png"]
    assert "inside folder '_normal'" in reasons["_normal/e.png"]
    # A strict read fails naming them; a glob on names leaves out what it would not match.
    with pytest.raises(IngestError, match=r"_b\.png"):
        read_images(spark, str(root))
    pngs = read_images(spark, str(root), pattern="*.{png,dcm}", strict=False)
    assert sorted(local_path(r.path).rsplit("/", 1)[1] for r in pngs.rejects.collect()) == [
        "_b.png", "d.png", "e.png"]


@classic_only("mounts a Hadoop filesystem through the session's Hadoop configuration")
def test_a_remote_manifest_row_whose_file_is_missing_is_rejected_not_fatal(spark, tmp_path):
    # On S3 or HDFS covidspark cannot stat every row beforehand, and Spark fails the
    # whole load on the first missing path. viewfs:// is a real non-local Hadoop
    # filesystem (a mount of this folder), so the read takes that path here.
    from covidspark.data.listing import MAX_MISSING_RETRIES

    mount = f"xrays{os.getpid()}{tmp_path.name}".replace("_", "")
    spark.sparkContext._jsc.hadoopConfiguration().set(
        f"fs.viewfs.mounttable.{mount}.link./data", tmp_path.as_uri())
    (tmp_path / "normal").mkdir()
    for i, name in enumerate(["a.png", "b.png"]):
        (tmp_path / "normal" / name).write_bytes(_png(_gradient(32, 32) // 2 + 40 * i))
    remote = f"viewfs://{mount}/data/normal"
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(
        f"{remote}/{name},normal\n" for name in ["a.png", "gone1.png", "b.png", "gone2.png"]))
    result = read_images(spark, manifest=str(manifest), strict=False)
    assert (result.total, result.rejected) == (4, 2)
    assert sorted((r.path, r.reason) for r in result.rejects.collect()) == [
        (f"{remote}/gone1.png", "line 3: file not found"),
        (f"{remote}/gone2.png", "line 5: file not found")]
    for row in result.images.collect():
        on_disk = (tmp_path / "normal" / row.path.rsplit("/", 1)[1]).read_bytes()
        assert row.image_id == hashlib.sha256(on_disk).hexdigest()
    # Spark names one missing path a load: past the limit, one error names them.
    many = tmp_path / "many.csv"
    many.write_text("path,label\n" + "".join(
        f"{remote}/gone{i}.png,normal\n" for i in range(MAX_MISSING_RETRIES + 3)))
    with pytest.raises(InputError, match=f"more than {MAX_MISSING_RETRIES} rows name files "
                                         r"that do not exist") as error:
        read_images(spark, manifest=str(many), strict=False)
    # Spark checks paths in parallel, so which ones it names first varies: the
    # message names the rows it found, by line, each as the manifest wrote it.
    named = re.findall(r"line (\d+): (\S+?)(?:;|$)", str(error.value))
    assert len(named) == MAX_MISSING_RETRIES + 1
    assert [int(line) for line, _ in named] == sorted(int(line) for line, _ in named)
    for line, path in named:
        assert path == f"{remote}/gone{int(line) - 2}.png"


@classic_only("mounts a Hadoop filesystem through the session's Hadoop configuration")
def test_a_remote_folder_s_hidden_images_are_reported_by_their_uri(spark, tmp_path):
    # On HDFS or S3 the second listing goes through Hadoop, not os.walk: the reject
    # must name the file as Spark's path column names the images it did read.
    mount = f"hidden{os.getpid()}{tmp_path.name}".replace("_", "")
    spark.sparkContext._jsc.hadoopConfiguration().set(
        f"fs.viewfs.mounttable.{mount}.link./data", tmp_path.as_uri())
    for i, name in enumerate(["normal/a.png", "normal/_b.png", "normal/_old/c.png"]):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(_png(_gradient(32, 32) // 2 + 40 * i))
    remote = f"viewfs://{mount}/data"
    result = read_images(spark, remote, strict=False)
    assert [r.path for r in result.images.collect()] == [f"{remote}/normal/a.png"]
    assert sorted(r.path for r in result.rejects.collect()) == [
        f"{remote}/normal/_b.png", f"{remote}/normal/_old/c.png"]
    assert (result.total, result.rejected) == (3, 2)


def test_metadata_files_are_skipped_quietly(spark, fixture_dir, tmp_path, caplog):
    root = tmp_path / "mixed"
    shutil.copytree(os.path.join(fixture_dir, "covid"), root / "covid")
    (root / "covid" / "notes.txt").write_text("radiologist notes")
    (root / "metadata.csv").write_text("a,b\n")
    # What Windows Explorer leaves in a folder of pictures (a strict read failed on it).
    (root / "covid" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 thumbnail cache")
    (root / "desktop.ini").write_text("[.ShellClassInfo]\n")
    with caplog.at_level(logging.DEBUG, logger="covidspark"):
        result = read_images(spark, str(root), strict=False)
    assert result.images.count() == 6 and result.rejected == 0 and result.total == 6
    # Quietly: no warning names them, and no reject lists them.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    for name in ("notes.txt", "metadata.csv", "Thumbs.db", "desktop.ini"):
        assert name not in caplog.text
    # By name, not by extension: another .db file is still reported.
    (root / "covid" / "scans.db").write_bytes(b"sqlite")
    result = read_images(spark, str(root), strict=False)
    assert [r.reason for r in result.rejects.collect()] == [
        "unsupported file type '.db' (supported: .png, .jpg, .jpeg, .dcm, .dicom)"]


def test_glob_pattern_and_path_filter(spark, fixture_dir, tmp_path):
    pngs = read_images(spark, fixture_dir, pattern="*.png")
    assert pngs.count() == sum(f.endswith(".png") for _, _, fs in os.walk(fixture_dir) for f in fs)
    # Chowdhury-style layout: <class>/images/*.png beside <class>/masks/*.png
    root = tmp_path / "radiography"
    for label in ("COVID", "Normal"):
        shutil.copytree(os.path.join(fixture_dir, label.lower()), root / label / "images")
        shutil.copytree(os.path.join(fixture_dir, label.lower()), root / label / "masks")
    df = read_images(spark, str(root), path_filter=r"^[^/]+/images/",
                     label_map={"COVID": "covid", "Normal": "normal"})
    assert {r.label: r["count"] for r in df.groupBy("label").count().collect()} == \
        {"covid": 6, "normal": 6}
    assert df.filter(df.path.contains("/masks/")).count() == 0


def test_patients_table_fills_patient_id(spark, fixture_dir, tmp_path):
    names = sorted(os.listdir(os.path.join(fixture_dir, "covid")))
    patients = tmp_path / "patients.csv"
    rel = os.path.relpath(fixture_dir, tmp_path)
    patients.write_text("path,patient_group\n" + "".join(
        f"{rel}/covid/{n},cohen:{i // 2}\n" for i, n in enumerate(names)))
    df = read_images(spark, fixture_dir, patients=str(patients))
    got = {r.path.rsplit("/", 1)[-1]: r.patient_id for r in df.collect() if r.label == "covid"}
    assert got == {n: f"cohen:{i // 2}" for i, n in enumerate(names)}
    assert df.filter("label != 'covid' AND patient_id IS NOT NULL").count() == 0


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


def test_a_manifest_read_keeps_the_bytes_in_the_scan_partitions(spark, fixture_dir, tmp_path):
    """The manifest's rows are joined to the files' bytes without a shuffle.

    Joined the other way round (every manifest row kept), Spark shuffled each
    image's bytes; the plan must not exchange the scan, and every row still
    finds its own file's bytes.
    """
    names = {label: sorted(os.listdir(os.path.join(fixture_dir, label)))[:3]
             for label in ("covid", "normal")}
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(
        f"{os.path.join(fixture_dir, label, name)},{label}\n"
        for label, files in names.items() for name in files))
    from covidspark.runtime.session import temporary_conf

    # As for a real set: its files are far over Spark's size to broadcast on its own
    # (a few small test files are under it, and Spark would broadcast their bytes).
    printed = io.StringIO()
    with temporary_conf(spark, "spark.sql.autoBroadcastJoinThreshold", "-1"), \
            contextlib.redirect_stdout(printed):
        df = read_images(spark, manifest=str(manifest), validate=False)
        df.explain()  # printed by Python, under Spark Connect too
    plan = printed.getvalue()
    assert "BinaryFile" in plan or "binaryFile" in plan
    assert "Exchange hashpartitioning" not in plan, plan
    rows = df.select("path", "label", "image_id").collect()
    assert sorted(os.path.basename(r.path) for r in rows) == sorted(
        n for files in names.values() for n in files)
    for r in rows:
        assert os.path.basename(os.path.dirname(local_path(r.path))) == r.label
        with open(local_path(r.path), "rb") as f:
            assert r.image_id == hashlib.sha256(f.read()).hexdigest()


def test_manifest_errors_name_rows_and_files(spark, tmp_path, fixture_dir):
    good = os.path.join(fixture_dir, "covid", os.listdir(os.path.join(fixture_dir, "covid"))[0])
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{good},covid\nmissing/scan.png,normal\n{good},\n"
                        f"{good},covid\n{good.replace('covid', 'normal', 1)},Lateral\n")
    with pytest.raises(IngestError) as error:
        read_images(spark, manifest=str(manifest), label_map={"covid": "covid", "normal": "normal"})
    message = str(error.value)
    assert "4 of 5 file(s) or row(s) rejected" in message
    assert "line 3: file not found" in message and "missing/scan.png" in message
    assert "line 4: empty path or label" in message
    assert "line 5: duplicate path (first listed on line 2)" in message
    assert "line 6: label 'Lateral' not in label_map" in message
    result = read_images(spark, manifest=str(manifest), strict=False,
                         label_map={"covid": "covid", "normal": "normal"})
    assert (result.accepted, result.rejected, result.total) == (1, 4, 5)
    (tmp_path / "cols.csv").write_text("file,label\na.png,covid\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['path'\]"):
        read_images(spark, manifest=str(tmp_path / "cols.csv"))


def test_exactly_one_source(spark):
    with pytest.raises(ValueError, match="exactly one"):
        read_images(spark)


def test_dicom_files_are_read_described_and_decoded_on_the_executors(spark, fixture_dir,
                                                                    tmp_path):
    require_module("pydicom", now=True)
    import pandas as pd

    from covidspark.data.datasets import describe
    from covidspark.data.decoding import decode_image
    from test_decoding import dicom_bytes, ramp

    root = tmp_path / "dicom"
    shutil.copytree(os.path.join(fixture_dir, "covid"), root / "covid")
    (root / "normal").mkdir()
    data = dicom_bytes(ramp(), photometric="MONOCHROME1", window=(2048, 4096))
    (root / "normal" / "scan.dcm").write_bytes(data)
    (root / "normal" / "broken.dcm").write_bytes(data[:400])
    # The read's validity check decodes on the executors: the truncated file is named.
    result = read_images(spark, str(root), strict=False)
    rejects = {os.path.basename(r.path): r.reason for r in result.rejects.collect()}
    assert list(rejects) == ["broken.dcm"] and result.accepted == 7
    df = result.images
    report = describe(spark, df)
    assert report["formats"]["DICOM"] == 1 and report["bit_depths"]["12"] == 1

    def decode_in_worker(batches):
        for batch in batches:
            yield pd.DataFrame({
                "pid": [os.getpid()] * len(batch),
                "pixels": [decode_image(bytes(c), 32).tobytes() for c in batch["content"]]})

    row = (df.filter("label = 'normal'").select("content")
           .mapInPandas(decode_in_worker, "pid long, pixels binary").collect()[0])
    assert row.pid != os.getpid()  # a Python worker, not the driver
    np.testing.assert_array_equal(np.frombuffer(row.pixels, np.float32).reshape(32, 32, 3),
                                  decode_image(data, 32))


def test_known_labels_turn_unknown_labels_into_rejects(spark, fixture_dir, tmp_path):
    import pandas as pd

    from covidspark.data.reading import IngestError, read_images

    rows = [{"path": f"{label}/{name}", "label": label}
            for label in ("covid", "normal") for name in sorted(os.listdir(
                os.path.join(fixture_dir, label)))[:2]]
    rows[0]["label"] = "Lateral"
    manifest = pd.DataFrame(rows)
    result = read_images(spark, manifest=manifest, base_dir=fixture_dir, strict=False,
                         known_labels=("normal", "covid", "pneumonia"))
    rejects = [(r.path, r.reason) for r in result.rejects.collect()]
    assert result.total == 4 and result.accepted == 3 and result.images.count() == 3
    assert len(rejects) == 1 and rejects[0][0].endswith(rows[0]["path"])
    assert "label 'Lateral' is not one of normal, covid, pneumonia" in rejects[0][1]
    with pytest.raises(IngestError, match="Lateral"):
        read_images(spark, manifest=manifest, base_dir=fixture_dir, known_labels=("covid",
                                                                                   "normal"))


def test_folders_spelt_another_way_get_the_label_map_that_reads_them(spark, fixture_dir,
                                                                     tmp_path):
    """COVID/ and Normal/ are rejected, each with its map; a cut list still shows both."""
    covid_images = sorted(os.listdir(os.path.join(fixture_dir, "covid")))
    for folder in ("COVID", "Normal"):
        os.makedirs(tmp_path / folder)
        for i in range(11):  # 22 rejects: more than the 20 a message lists
            name = covid_images[i % len(covid_images)]
            shutil.copy(os.path.join(fixture_dir, "covid", name), tmp_path / folder / f"{i}-{name}")
    # One folder the task knows: the others are rejects (with none, the layout's error).
    os.makedirs(tmp_path / "pneumonia")
    shutil.copy(os.path.join(fixture_dir, "covid", covid_images[0]), tmp_path / "pneumonia")
    with pytest.raises(IngestError) as error:
        read_images(spark, str(tmp_path), known_labels=("normal", "covid", "pneumonia"),
                    inspect_labels=("normal", "covid"))
    message = str(error.value)
    assert "22 of 23" in message and "... and 2 more" in message
    assert """label 'COVID' is not one of normal, covid, pneumonia (map it with label_map, e.g. \
--label-map '{"COVID": "covid"}')""" in message
    assert """--label-map '{"Normal": "normal"}'""" in message


@pytest.mark.parametrize("strict", [True, False])
def test_a_tree_whose_class_folders_are_one_level_down_is_named_before_any_read(
        spark, fixture_dir, tmp_path, strict):
    """A data set's root (ozturk/images/covid/..., its manifest beside images/): the error
    says where the class folders are, and the manifest, not 'label images' per file."""
    from covidspark.errors import InputError

    root = tmp_path / "set"
    for label in ("covid", "normal"):
        shutil.copytree(os.path.join(fixture_dir, label), root / "images" / label)
    (root / "manifest.csv").write_text("path,label\n")
    os.makedirs(root / "COVID-19")
    shutil.copy(next(iter((root / "images" / "covid").iterdir())), root / "COVID-19" / "x.png")
    known = ("normal", "covid", "pneumonia")
    with pytest.raises(InputError) as error:
        read_images(spark, str(root), known_labels=known, strict=strict)
    # Found from the listing: not the ingest pass's list of rejected files.
    assert not isinstance(error.value, IngestError)
    lines = str(error.value).splitlines()
    assert lines[0].startswith(f"No class folder under {root} is one of the labels normal, "
                               f"covid, pneumonia")
    assert lines[1] == ("  'COVID-19' (1 images): label 'COVID-19' is not one of normal, covid, "
                        """pneumonia (map it with label_map, e.g. --label-map '{"COVID-19": """
                        """"covid"}')""")
    assert lines[2] == (f"  'images' (12 images): the class folders are in it: point the path "
                        f"at {root}/images")
    assert "holds manifest.csv: a CSV with path and label columns is read as a manifest" in \
        lines[3]
    # There, they read.
    images = read_images(spark, str(root / "images"), known_labels=known)
    assert images.count() == 12
    images.unpersist()


def test_a_cut_list_of_rejects_shows_every_reason_it_can():
    from covidspark.data.rejects import shown_rejects

    rejects = [(f"a{i}", "same") for i in range(30)] + [("b", "other"), ("c", "third")]
    shown = shown_rejects(rejects, 20)
    assert len(shown) == 20 and {r for _, r in shown} == {"same", "other", "third"}
    assert shown == sorted(shown, key=rejects.index)  # in the list's own order
    assert shown_rejects(rejects[:30], 20) == rejects[:20]
    assert shown_rejects(rejects, 100) == rejects
    many = [(str(i), f"reason {i}") for i in range(25)]
    assert shown_rejects(many, 20) == many[:20]


def test_unknown_labels_come_from_the_ingest_query_undecoded(spark, fixture_dir, tmp_path):
    """With validation, the ingest pass's query of its failures also finds unknown labels.

    Such a row is not decoded: a broken file under an unknown label gets the
    label's reason, not a decode error, and the label rejects come first.
    """
    root = tmp_path / "tree"
    for label in ("covid", "normal"):
        shutil.copytree(os.path.join(fixture_dir, label), root / label)
    broken = _png(_gradient(256, 256))[:300]
    (root / "normal" / "truncated.png").write_bytes(broken)
    (root / "Lateral").mkdir()
    (root / "Lateral" / "cut.png").write_bytes(broken)
    shutil.copy(os.path.join(fixture_dir, "covid", sorted(os.listdir(root / "covid"))[0]),
                root / "Lateral" / "side.png")
    known = ("normal", "covid", "pneumonia")
    good = len(os.listdir(root / "covid")) + len(os.listdir(root / "normal")) - 1
    result = read_images(spark, str(root), strict=False, known_labels=known)
    rejects = [(os.path.basename(r.path), r.reason) for r in result.rejects.collect()]
    label_reason = "label 'Lateral' is not one of normal, covid, pneumonia"
    assert sorted(name for name, _ in rejects[:2]) == ["cut.png", "side.png"]
    assert len(rejects) == 3 and rejects[2][0] == "truncated.png"
    assert all(label_reason in reason for _, reason in rejects[:2])
    assert "not a decodable image" in rejects[2][1]
    assert result.total == good + 3 and result.accepted == good
    kept = result.images.select("label", "info").collect()
    assert len(kept) == good and all(r.label in known and r.info.width > 0 for r in kept)
    # The ingest pass's own table: the unknown-label rows are there, undecoded.
    from pyspark.sql import functions as F

    from covidspark.data.ingest import inspect_and_persist

    files = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
             .load(str(root)))
    candidates = files.select(F.sha2("content", 256).alias("image_id"), "path",
                              F.element_at(F.split("path", "/"), -2).alias("label"), "content")
    inspected, found = inspect_and_persist(candidates, known_labels=known)
    by_name = {os.path.basename(r.path): r for r in inspected.collect()}
    inspected.unpersist()
    for name in ("cut.png", "side.png"):
        assert by_name[name].content is None and by_name[name].info.error is None, name
        assert by_name[name].info.width is None, name
    assert by_name["truncated.png"].info.error is not None
    assert sorted(os.path.basename(p) for p, _, _ in found) == [
        "cut.png", "side.png", "truncated.png"]
    # Without validation the labels are still checked (nothing is decoded).
    plain = read_images(spark, str(root), strict=False, known_labels=known, validate=False)
    assert sorted(os.path.basename(r.path) for r in plain.rejects.collect()) == [
        "cut.png", "side.png"]
    assert plain.images.count() == good + 1


def test_one_image_file_is_read_alone_without_labels(spark, fixture_dir, tmp_path):
    """``predict --images x.png`` said "Image folder not found: x.png"."""
    name = sorted(os.listdir(os.path.join(fixture_dir, "covid")))[0]
    path = os.path.join(fixture_dir, "covid", name)
    result = read_images(spark, path, strict=False, labelled=False)
    assert (result.total, result.rejected) == (1, 0)
    [row] = result.images.select("path", "image_id").collect()
    assert row.path == f"file:{path}"
    with open(path, "rb") as f:
        assert row.image_id == hashlib.sha256(f.read()).hexdigest()
    # With labels, a file has no class folder to say its label.
    with pytest.raises(InputError, match=f"{name} is a file; images with labels are read from a "
                                         f"folder of class folders"):
        read_images(spark, path)
    with pytest.raises(InputNotFoundError, match="Image folder not found"):
        read_images(spark, str(tmp_path / "absent.png"), labelled=False)
