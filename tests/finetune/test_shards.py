"""The fine-tuning image table: Spark writes it, each rank reads its shard without Spark.

No torch here: the table is plain Spark and pyarrow, and this file runs in seconds
on both Spark 3.5 and 4.x (Spark 3.5's ``array_position`` once broke it).
"""
import collections

import pytest

from covidspark.errors import InputError
from covidspark.finetune.shards import read_manifest, read_shard, write_shards

LABELS = ["covid", "normal"]


def _images(spark, per_class_split):
    rows = []
    for (label, split), n in per_class_split.items():
        rows += [(f"{label}-{split}-{i:03d}", f"{label}/{split}/{i}".encode(), label, split)
                 for i in range(n)]
    return spark.createDataFrame(rows, "image_id string, content binary, label string, "
                                       "split string")


def test_shards_hold_every_train_and_validation_row_once_with_its_label_index(spark, tmp_path):
    sizes = {("covid", "train"): 7, ("normal", "train"): 10, ("covid", "validation"): 2,
             ("normal", "validation"): 3, ("covid", "test"): 4}
    images = _images(spark, sizes)
    location = str(tmp_path / "shards")
    manifest = write_shards(images, LABELS, location, world=3, seed=1)
    assert manifest == read_manifest(location)
    assert manifest["counts"] == {"train": {"covid": 7, "normal": 10},
                                  "validation": {"covid": 2, "normal": 3}}
    seen = []
    per_shard = []
    for rank in range(3):
        shard = read_shard(location, rank)
        per_shard.append(collections.Counter(
            (iid.split("-")[0], bool(is_train))
            for iid, is_train in zip(shard["image_id"], shard["is_train"])))
        for iid, content, index, is_train in zip(shard["image_id"], shard["content"],
                                                 shard["label_index"], shard["is_train"]):
            label, split, number = iid.split("-")
            # The label index follows the order of LABELS, not Spark's order of the rows.
            assert index == LABELS.index(label), iid
            assert bool(is_train) == (split == "train") and content == (
                f"{label}/{split}/{int(number)}".encode())
            seen.append(iid)
    # Every train and validation row in exactly one shard; the test rows in none.
    expected = [f"{label}-{split}-{i:03d}" for (label, split), n in sizes.items()
                if split != "test" for i in range(n)]
    assert sorted(seen) == sorted(expected)
    # Dealt round-robin per (split, label): shard sizes differ by at most one per class.
    for key in {k for counts in per_shard for k in counts}:
        sizes_of_key = [counts[key] for counts in per_shard]
        assert max(sizes_of_key) - min(sizes_of_key) <= 1, (key, sizes_of_key)


def test_shards_refuse_an_unknown_label_and_too_few_training_images(spark, tmp_path):
    with pytest.raises(InputError, match="'pneumonia'.*not one of covid, normal"):
        write_shards(_images(spark, {("pneumonia", "train"): 2, ("covid", "train"): 2}),
                     LABELS, str(tmp_path / "a"), world=2)
    with pytest.raises(InputError, match="at least one training image per process"):
        write_shards(_images(spark, {("covid", "train"): 1, ("normal", "validation"): 2}),
                     LABELS, str(tmp_path / "b"), world=2)
