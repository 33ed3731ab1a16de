from collections import Counter

import pytest

from covidspark.data.splits import stratified_split
from covidspark.errors import InputError


def _table(spark, counts):
    rows = [(f"{label}-{i}", f"id-{label}-{i}", label)
            for label, n in counts.items() for i in range(n)]
    return spark.createDataFrame(rows, "path string, image_id string, label string")


def test_split_is_stratified_exact_and_loses_nothing(spark):
    counts = {"covid": 13, "normal": 50, "pneumonia": 2}
    rows = stratified_split(_table(spark, counts), test_fraction=0.2, seed=5).collect()
    assert len(rows) == sum(counts.values())
    assert len({r.path for r in rows}) == len(rows)
    test = Counter(r.label for r in rows if r.split == "test")
    # round(13 * 0.8) = 10 train -> 3 test; 50 -> 10 test; 2 -> one on each side.
    assert test == {"covid": 3, "normal": 10, "pneumonia": 1}


def test_identical_files_stay_on_one_side_of_the_plain_split(spark):
    """``--duplicates keep`` or ``ignore``: copies of a file are one unit, never parted."""
    rows = []
    for label in ("covid", "normal"):
        for i in range(40):  # 40 distinct files a class; a quarter stored twice or three times
            copies = 1 + (i % 4 == 0) + (i % 8 == 0)
            rows += [(f"/{label}/{i}-copy{c}.png", f"id-{label}-{i}", label) for c in range(copies)]
    rows.append(("/normal/unread.png", None, "normal"))  # no id: a unit of its own
    df = spark.createDataFrame(rows, "path string, image_id string, label string")
    for seed in range(10):
        out = stratified_split(df, 0.25, seed).collect()
        assert sorted(r.path for r in out) == sorted(r[0] for r in rows)
        sides = {}
        for r in out:
            sides.setdefault(r.image_id or r.path, set()).add((r.label, r.split))
        assert all(len(s) == 1 for s in sides.values()), seed
        # Units, not rows: covid 40 -> 10 test; normal 41 -> round(41 * 0.75) = 31 train.
        test_units = Counter(label for s in sides.values() for label, split in s
                             if split == "test")
        assert test_units == {"covid": 10, "normal": 10}, seed


def test_split_is_deterministic_by_seed(spark):
    df = _table(spark, {"covid": 40, "normal": 40})

    def assignment(seed):
        return {r.path: r.split for r in stratified_split(df, 0.25, seed).collect()}

    assert assignment(1) == assignment(1)
    assert assignment(1) != assignment(2)


def test_split_arguments_are_checked(spark):
    df = _table(spark, {"covid": 4})
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(df, 1.5)
    with pytest.raises(ValueError, match="'patient'"):
        stratified_split(df, 0.2, label_col="patient")


def _grouped_table(spark):
    # 40 patients with 1-3 images; some patients have images of two labels (as 21
    # NIH patients do in the Ozturk set); two duplicate groups across patients.
    rows = []
    for p in range(40):
        label = ["covid", "normal", "pneumonia"][p % 3]
        for k in range(1 + p % 3):
            other = "pneumonia" if (label == "normal" and k == 2) else label
            rows.append((f"img-{p}-{k}", other, f"pat-{p}", None))
    rows[0] = rows[0][:3] + ("dup-A",)
    rows[10] = rows[10][:3] + ("dup-A",)
    rows[5] = rows[5][:3] + ("dup-B",)
    rows[30] = rows[30][:3] + ("dup-B",)
    return spark.createDataFrame(rows, "path string, label string, patient_id string, "
                                       "dup_group string")


def test_grouped_split_never_separates_patients_or_duplicates(spark):
    from covidspark.data.splits import grouped_split

    df = _grouped_table(spark)
    out, summary = grouped_split(df, (0.6, 0.2, 0.2), seed=3, k_folds=3)
    rows = out.collect()
    assert len(rows) == df.count()
    for key in ("patient_id", "dup_group"):
        sides = {}
        for r in rows:
            if r[key] is not None:
                sides.setdefault(r[key], set()).add((r.split, r.fold))
        assert all(len(s) == 1 for s in sides.values()), key
    assert {r.split for r in rows} == {"train", "validation", "test"}
    assert {r.fold for r in rows if r.split == "train"} == {0, 1, 2}
    assert all(r.fold is None for r in rows if r.split != "train")
    assert sum(n for per in summary["images"].values() for n in per.values()) == len(rows)
    again, _ = grouped_split(df, (0.6, 0.2, 0.2), seed=3, k_folds=3)
    assert {r.path: r.split for r in again.collect()} == {r.path: r.split for r in rows}


def test_grouped_split_fractions_are_close_for_singletons(spark):
    from covidspark.data.splits import grouped_split

    df = _table(spark, {"covid": 50, "normal": 100})
    out, summary = grouped_split(df, (0.8, 0.0, 0.2), seed=1)
    assert summary["images"]["test"] == {"covid": 10, "normal": 20}
    with pytest.raises(ValueError, match="summing to 1"):
        grouped_split(df, (0.8, 0.1, 0.2))


def test_a_copy_of_the_set_elsewhere_splits_alike(spark):
    """The same files on S3, DBFS or a laptop: the same split, image for image.

    Each image is named by its bytes' sha256 (``image_id``); the split must follow it,
    not the path. Before, units were ordered by their paths, and ozturk read from a
    second folder shared only 28 of its 124 test images with the first.
    """
    import hashlib

    from covidspark.data.splits import grouped_split

    rows = []
    for p in range(60):
        label = ("covid", "normal")[p % 2]
        for k in range(1 + p % 3):
            image_id = hashlib.sha256(f"pixels {p} {k}".encode()).hexdigest()
            rows.append((f"images/{label}/{p}-{k}.png", image_id, label, f"pat-{p}"))

    def split(root):
        df = spark.createDataFrame([(f"{root}/{path}", *rest) for path, *rest in rows],
                                   "path string, image_id string, label string, patient_id string")
        out, _ = grouped_split(df, (0.7, 0.1, 0.2), seed=4, k_folds=3)
        return {r.image_id: (r.split, r.fold) for r in out.collect()}

    here = split("file:/work/shared/data/set")
    assert here == split("s3a://bucket/copies/set") == split("dbfs:/Volumes/main/x/set")
    assert {s for s, _ in here.values()} == {"train", "validation", "test"}
    # The seed still decides: another seed, another split.
    df = spark.createDataFrame([(f"/x/{path}", *rest) for path, *rest in rows],
                               "path string, image_id string, label string, patient_id string")
    other, _ = grouped_split(df, (0.7, 0.1, 0.2), seed=5)
    assert {r.image_id: r.split for r in other.collect()} != {k: s for k, (s, _) in here.items()}


def test_identical_files_are_one_unit_and_a_missing_id_is_named(spark):
    from covidspark.data.splits import grouped_split

    # 30 singletons and one file stored twice (no duplicate groups: duplicates ignored).
    rows = [(f"/a/{i}.png", f"id-{i:02d}", ("covid", "normal")[i % 2]) for i in range(30)]
    rows.append(("/b/copy-of-7.png", "id-07", "normal"))
    schema = "path string, image_id string, label string"
    for seed in range(8):
        out, summary = grouped_split(spark.createDataFrame(rows, schema), (0.5, 0.0, 0.5), seed)
        sides = {r.path: r.split for r in out.collect()}
        assert sides["/a/7.png"] == sides["/b/copy-of-7.png"], seed
        assert summary["units"] == 30
    rows[3] = ("/a/3.png", None, "normal")
    with pytest.raises(ValueError, match=r"1 row\(s\) without 'image_id', e.g. '/a/3.png'"):
        grouped_split(spark.createDataFrame(rows, schema), (0.5, 0.0, 0.5))


def test_a_small_class_of_whole_patients_still_has_a_test_patient(spark):
    from covidspark.data.splits import grouped_split, split_images

    # Two COVID patients of three images, a 20 % test share: by shares alone both
    # would train (0.2 x 6 images is less than one patient), leaving nothing to test.
    rows = [(f"c-{p}-{k}", f"id-c-{p}-{k}", "covid", f"covid-patient-{p}", None)
            for p in range(2) for k in range(3)]
    rows += [(f"n-{i}", f"id-n-{i}", "normal", f"normal-patient-{i}", None) for i in range(10)]
    schema = "path string, image_id string, label string, patient_id string, dup_group string"
    df = spark.createDataFrame(rows, schema)
    for seed in range(5):
        _, summary = grouped_split(df, (0.8, 0.0, 0.2), seed=seed)
        assert summary["images"]["test"]["covid"] == 3 and summary["images"]["train"]["covid"] == 3
        assert summary["images"]["test"]["normal"] == 2
    # With a validation share too, test is served first; a class of two patients has none
    # to spare for validation, one of three gives each side one.
    _, summary = grouped_split(df, (0.7, 0.1, 0.2), seed=0)
    assert summary["images"]["test"]["covid"] == 3 and "covid" not in summary["images"].get(
        "validation", {})
    three = df.union(spark.createDataFrame([(f"c-2-{k}", f"id-c-2-{k}", "covid", "covid-patient-2",
                                             None) for k in range(3)], schema))
    _, summary = grouped_split(three, (0.7, 0.1, 0.2), seed=0)
    assert {side: per["covid"] for side, per in summary["images"].items()} == {
        "train": 3, "validation": 3, "test": 3}
    # One patient per class: nothing can be tested, and the error says why.
    alone = spark.createDataFrame([("a", "id-a", "covid", "p1", None),
                                   ("b", "id-b", "covid", "p1", None),
                                   ("c", "id-c", "normal", "p2", None)], schema)
    with pytest.raises(InputError, match=r"no test images: the 3 images form 2 unit\(s\)"):
        split_images(alone, 0.2, seed=0)
