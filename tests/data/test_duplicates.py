import csv
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA, require_path
from covidspark.data import duplicates
from covidspark.data.duplicates import (duplicate_groups, find_duplicate_pairs, group_pairs,
                                          hash_bands, pairs_within, resolve_duplicates)
from covidspark.data.hashing import hamming, hex_to_signed64, phash
from covidspark.data.reading import read_images


def test_bands_cover_64_bits_pigeonhole():
    for t in range(0, 8):
        bands = hash_bands(t)
        assert len(bands) == t + 1
        widths = [bin(m & ((1 << 64) - 1)).count("1") for _, m in bands]
        assert sum(widths) == 64


def near_hashes(seed=0, n=30):
    """``2 n`` signed 64-bit hashes: ``n`` random ones, each with a copy 0..4 bits away."""
    rng = np.random.default_rng(seed)
    base = [int(x) for x in rng.integers(0, 2 ** 63, n, dtype=np.int64)]
    hashes = []
    for i, h in enumerate(base):
        hashes.append(h)
        flipped = h
        for bit in rng.choice(64, size=i % 5, replace=False):  # 0..4 bits away
            flipped ^= 1 << int(bit)
        hashes.append(flipped - (1 << 64) if flipped >= 1 << 63 else flipped)
    return hashes


def brute_force_pairs(hashes, t):
    """Every ``(i, j, distance)``, ``i < j``, within ``t`` bits: all pairs, Python ints."""
    return {(i, j, bin((hashes[i] ^ hashes[j]) & ((1 << 64) - 1)).count("1"))
            for i in range(len(hashes)) for j in range(i + 1, len(hashes))
            if bin((hashes[i] ^ hashes[j]) & ((1 << 64) - 1)).count("1") <= t}


@pytest.fixture()
def hash_table(spark):
    hashes = near_hashes()
    # A bucket shared by many (the top band equal): candidates that are mostly too far.
    hashes += [(7 << 50) | int(x) for x in np.random.default_rng(1).integers(0, 2 ** 40, 12)]
    rows = [(f"p{i:03d}", f"id{i}", "covid", "s", h) for i, h in enumerate(hashes)]
    df = spark.createDataFrame(rows, "path string, image_id string, label string, source string, "
                                     "phash64 long")
    return hashes, df


def test_pairs_match_brute_force(hash_table):
    hashes, df = hash_table
    for t in (0, 2, 4):
        expected = {(f"p{i:03d}", f"p{j:03d}", d) for i, j, d in brute_force_pairs(hashes, t)}
        got = {(r.path_a, r.path_b, r.distance) for r in find_duplicate_pairs(df, t).collect()}
        assert got == expected, t
        # The driver's search, on the same hashes.
        i, j, d = pairs_within(np.array(hashes, dtype=np.int64), t)
        assert {(int(a), int(b), int(c)) for a, b, c in zip(i, j, d)} == \
            brute_force_pairs(hashes, t), t


def test_driver_and_spark_searches_give_the_same_groups(hash_table, monkeypatch):
    _, df = hash_table
    for t in (0, 2, 4):
        on_driver = duplicate_groups(df, t)
        # near_hashes plants pairs exactly 0, 2 and 4 bits apart.
        assert max(g["max_distance"] for g in on_driver) == t
        # Past the row limit the band join runs in Spark.
        with monkeypatch.context() as patched:
            patched.setattr(duplicates, "DRIVER_SEARCH_MAX_ROWS", 0)
            assert duplicate_groups(df, t) == on_driver, t


def test_group_pairs_connects_components():
    assert group_pairs([("b", "c"), ("a", "b"), ("x", "y")]) == \
        {"a": "a", "b": "a", "c": "a", "x": "x", "y": "x"}


@pytest.fixture()
def tree_with_duplicates(fixture_dir, tmp_path):
    """The fixture plus an exact copy and a re-cropped copy of two images."""
    root = tmp_path / "dups"
    shutil.copytree(fixture_dir, root)
    covid = sorted(os.listdir(root / "covid"))
    exact_source = root / "covid" / covid[0]
    shutil.copy(exact_source, root / "covid" / ("copy-" + covid[0]))
    normal = sorted(os.listdir(root / "normal"))
    with Image.open(root / "normal" / normal[0]) as image:
        w, h = image.size
        image.crop((4, 4, w - 4, h - 4)).save(root / "normal" / "recropped.png")
    return root, exact_source, root / "normal" / normal[0]


def test_describe_finds_exact_and_recropped_copies(spark, tree_with_duplicates):
    from covidspark.data.datasets import describe, format_description

    root, exact_source, cropped_source = tree_with_duplicates
    report = describe(spark, read_images(spark, str(root)))
    assert report["images"] == 20
    assert report["by_label"] == {"covid": 7, "normal": 7, "pneumonia": 6}
    assert report["formats"].keys() <= {"PNG", "JPEG"} and report["bit_depths"] == {"8": 20}
    assert 256 <= report["width"]["min"] <= report["width"]["max"] <= 1024
    groups = {tuple(p.rsplit("/", 1)[-1] for p in g["paths"]): g for g in report["duplicate_groups"]}
    exact = tuple(sorted([exact_source.name, "copy-" + exact_source.name]))
    near = tuple(sorted([cropped_source.name, "recropped.png"]))
    assert set(groups) == {exact, near}
    assert groups[exact]["exact"] and not groups[near]["exact"]
    text = format_description(report)
    assert "exact (same bytes)" in text and "recropped.png" in text


def test_policies(spark, tree_with_duplicates):
    root, exact_source, _ = tree_with_duplicates
    images = read_images(spark, str(root))
    grouped, report = resolve_duplicates(images, "group")
    assert grouped.count() == 20 and report["dropped"] == []
    assert grouped.filter("dup_group IS NOT NULL").count() == 4
    dropped_df, report = resolve_duplicates(images, "drop")
    assert dropped_df.count() == 18 and len(report["dropped"]) == 2
    with pytest.raises(ValueError, match="keep, drop, group"):
        resolve_duplicates(images, "merge")


OZTURK_FULLRES = os.path.join(SHARED_DATA, "ozturk-fullres")


@pytest.mark.realdata
def test_phash_equals_imagehash_values_in_the_manifest():
    require_path(OZTURK_FULLRES)
    # The manifest's phash column was computed with imagehash.phash on the originals.
    with open(os.path.join(OZTURK_FULLRES, "manifest.csv")) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        with Image.open(os.path.join(OZTURK_FULLRES, row["path"])) as image:
            assert hamming(phash(image), row["phash"]) == 0, row["path"]
    assert hex_to_signed64("ffffffffffffffff") == -1


def test_keep_policy_reports_without_changing_rows(spark, tree_with_duplicates):
    root, _, _ = tree_with_duplicates
    images = read_images(spark, str(root))
    kept, report = resolve_duplicates(images, "keep")
    assert kept.columns == images.columns and kept.count() == 20
    assert len(report["groups"]) == 2 and report["dropped"] == []
