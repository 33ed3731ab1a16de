"""`describe` and patient-grouped splits on the real Ozturk set (skipped when absent; a failure under CI)."""
import os

import pytest

from conftest import SHARED_DATA, require_path

OZTURK = os.path.join(SHARED_DATA, "ozturk")

pytestmark = pytest.mark.realdata


@pytest.fixture(autouse=True)
def real_data():
    """Skips where ../shared/data is absent; fails under CI=true."""
    return require_path(os.path.join(OZTURK, "images"))


# describe(): test_jobs.py's datasets describe command takes the path (here, real files).
@pytest.mark.same_spark_path
def test_describe_reports_the_two_real_duplicates(spark):
    from covidspark.data.datasets import describe
    from covidspark.data.reading import read_images

    images = read_images(spark, os.path.join(OZTURK, "images"), validate=False)
    report = describe(spark, images)
    assert report["images"] == 1124
    assert report["by_label"] == {"covid": 124, "normal": 500, "pneumonia": 500}
    pairs = {tuple(p.rsplit("/", 1)[-1] for p in g["paths"]) for g in report["duplicate_groups"]}
    assert pairs == {
        ("E63574A7-4188-4C8D-8D17-9D67A18A1AFA.jpg", "F4341CE7-73C9-45C6-99C8-8567A5484B63.jpg"),
        ("00002658_001.jpg", "00002658_002.jpg"),
    }


def test_patient_grouped_split_of_the_real_set(spark):
    from covidspark.data.reading import read_images
    from covidspark.data.splits import grouped_split

    images = read_images(spark, os.path.join(OZTURK, "images"), validate=False,
                         patients=os.path.join(OZTURK, "patients.csv")).drop("content")
    rows = images.select("path", "patient_id").collect()
    assert all(r.patient_id for r in rows)
    assert len({r.patient_id for r in rows}) == 82 + 682
    split, summary = grouped_split(images, (0.7, 0.1, 0.2), seed=0, k_folds=5)
    assignment = split.select("patient_id", "split", "fold").collect()
    per_patient = {}
    for r in assignment:
        per_patient.setdefault(r.patient_id, set()).add((r.split, r.fold))
    assert all(len(v) == 1 for v in per_patient.values()), "a patient crosses splits or folds"
    test_covid = summary["images"]["test"]["covid"]
    assert 0.15 * 124 <= test_covid <= 0.25 * 124
