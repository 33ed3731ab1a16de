import csv
import filecmp
import os

import numpy as np
import pytest
from PIL import Image

from covidspark.data.synthetic import CLASSES, synthetic


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs if not f.startswith("."))


def test_synthetic_is_deterministic(tmp_path):
    a = synthetic(str(tmp_path / "a"), n_per_class=3, seed=7)
    b = synthetic(str(tmp_path / "b"), n_per_class=3, seed=7)
    c = synthetic(str(tmp_path / "c"), n_per_class=3, seed=8)
    files = _files(a)
    assert files == _files(b)
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert mismatch == [] and errors == []
    differing = [f for f in files if f.endswith((".png", ".jpg"))
                 and os.path.exists(os.path.join(c, f))
                 and not filecmp.cmp(os.path.join(a, f), os.path.join(c, f), shallow=False)]
    assert differing, "another seed must give other images"


def test_synthetic_layout_sizes_and_formats(fixture_dir):
    with open(os.path.join(fixture_dir, "manifest.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18
    assert {r["label"] for r in rows} == set(CLASSES)
    formats = set()
    for row in rows:
        path = os.path.join(fixture_dir, row["path"])
        assert row["path"].split("/")[0] == row["label"]
        with Image.open(path) as image:
            assert image.mode == "L"
            assert all(256 <= side <= 1024 for side in image.size)
            formats.add(image.format)
    assert formats == {"PNG", "JPEG"}


def test_class_signal_lies_in_the_lungs():
    from covidspark.data.synthetic import render_xray

    for seed in range(5):
        rng = np.random.default_rng(seed)
        pixels, lesions = render_xray("pneumonia", 512, 512, rng)
        (cy, cx, radius), = lesions
        pixels = pixels.astype(np.float32)

        def patch(y, x):
            r, c = int((y + 1) / 2 * 511), int((x + 1) / 2 * 511)
            return pixels[r - 6:r + 7, c - 6:c + 7].mean()

        # The consolidation is denser than the same place in the other, clear lung.
        assert patch(cy, cx) - patch(cy, -cx) > 30
        _, covid = render_xray("covid", 512, 512, np.random.default_rng(seed))
        assert {np.sign(x) for _, x, _ in covid} == {-1.0, 1.0}, "COVID opacities are bilateral"
        assert render_xray("normal", 64, 64, np.random.default_rng(seed))[1] == []


def test_synthetic_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_per_class"):
        synthetic(str(tmp_path), n_per_class=0)
    with pytest.raises(ValueError, match="min_size"):
        synthetic(str(tmp_path), min_size=512, max_size=256)


# ------------------------------------------------------------- public data sets

COHEN_METADATA = """patientid,offset,sex,age,finding,RT_PCR_positive,survival,view,modality,date,location,folder,filename,doi,url,license,clinical_notes,other_notes
2,0,M,65,Pneumonia/Viral/COVID-19,Y,Y,PA,X-ray,2020,,images,a.png,,,,,
2,3,M,65,Pneumonia/Viral/COVID-19,Y,Y,AP Supine,X-ray,2020,,images,b.jpg,,,,,
3,0,F,50,Pneumonia/Bacterial/Streptococcus,,,PA,X-ray,2004,,images,c.png,,,,,
4,0,F,50,SARS,,,AP,X-ray,2004,,images,d.png,,,,,
5,0,M,40,No Finding,,,PA,X-ray,2020,,images,e.png,,,,,
6,0,M,40,Pneumonia/Viral/COVID-19,Y,,L,X-ray,2020,,images,f.png,,,,,
7,0,M,40,Pneumonia/Viral/COVID-19,Y,,Axial,CT,2020,,volumes,g.nii.gz,,,,,
8,0,M,40,Tuberculosis,,,PA,X-ray,2020,,images,h.png,,,,,
"""


def test_cohen_manifest_maps_findings_views_and_patients(tmp_path):
    from covidspark.data.datasets import cohen_label, cohen_manifest

    (tmp_path / "metadata.csv").write_text(COHEN_METADATA)
    manifest, left_out = cohen_manifest(str(tmp_path / "metadata.csv"))
    assert manifest.to_dict("list") == {
        "path": ["images/a.png", "images/b.jpg", "images/c.png", "images/d.png", "images/e.png"],
        "label": ["covid", "covid", "pneumonia", "pneumonia", "normal"],
        "patient_id": ["cohen:2", "cohen:2", "cohen:3", "cohen:4", "cohen:5"],
        "source": ["cohen"] * 5,
    }
    assert left_out == {"not X-ray": 1, "not a frontal view": 1,
                        "finding not covid/normal/pneumonia": 1}
    assert cohen_label("COVID-19") == "covid" and cohen_label("ARDS") is None


def test_read_dataset_cohen_and_merge_with_another_source(spark, fixture_dir, tmp_path):
    import shutil

    from covidspark.data.datasets import merge, read_dataset
    from covidspark.data.duplicates import resolve_duplicates
    from covidspark.data.reading import read_images

    cohen = tmp_path / "cohen"
    (cohen / "images").mkdir(parents=True)
    sources = {n: os.path.join(fixture_dir, "covid", n)
               for n in sorted(os.listdir(os.path.join(fixture_dir, "covid")))}
    picks = list(sources.values())
    for name, src in zip("abcde", picks):
        ext = ".jpg" if name == "b" else ".png"
        shutil.copy(src, cohen / "images" / f"{name}{ext}")
    (cohen / "metadata.csv").write_text(COHEN_METADATA)
    cohen_df = read_dataset(spark, "cohen", str(cohen))
    rows = cohen_df.collect()
    assert sorted(r.label for r in rows) == ["covid", "covid", "normal", "pneumonia", "pneumonia"]
    assert {r.source for r in rows} == {"cohen"}
    other = read_images(spark, fixture_dir, source="ozturk")
    merged, counts = merge(other, cohen_df)
    assert counts["cohen"] == {"covid": 2, "pneumonia": 2, "normal": 1}
    assert counts["ozturk"] == {"covid": 6, "normal": 6, "pneumonia": 6}
    # The same files are in both sources: keep the ozturk copy of each.
    kept, report = resolve_duplicates(merged, "drop", source_priority=["ozturk", "cohen"])
    assert len(report["dropped"]) == 5 and all("/cohen/" in p for p in report["dropped"])
    assert kept.count() == 18
    bad = read_images(spark, fixture_dir, source="x").selectExpr(
        "image_id", "path", "'COVID-19' AS label", "patient_id", "source", "content")
    with pytest.raises(ValueError, match="source 'x' has label 'COVID-19'"):
        merge(bad)


@pytest.mark.parametrize("name, layout", [
    # The clone of muhammedtalo/COVID-19, and the Kaggle download (masks beside images).
    ("ozturk", {"X-Ray Image DataSet/Covid-19": "covid", "X-Ray Image DataSet/No_findings":
                "normal", "X-Ray Image DataSet/Pneumonia": "pneumonia"}),
    ("chowdhury", {"COVID-19_Radiography_Dataset/COVID/images": "covid",
                   "COVID-19_Radiography_Dataset/Normal/images": "normal",
                   "COVID-19_Radiography_Dataset/Viral Pneumonia/images": "pneumonia"}),
])
def test_read_dataset_reads_the_published_layouts(spark, fixture_dir, tmp_path, name, layout):
    # Both sets name a folder with a space: each file must be read once, as named.
    import shutil

    from covidspark.data.datasets import read_dataset

    root = tmp_path / name
    expected = {}
    for folder, label in layout.items():
        (root / folder).mkdir(parents=True)
        for image in sorted(os.listdir(os.path.join(fixture_dir, label)))[:2]:
            shutil.copy(os.path.join(fixture_dir, label, image), root / folder / f"x {image}")
            expected[str(root / folder / f"x {image}")] = label
        if name == "chowdhury":  # a mask is not an X-ray of the class
            masks = root / folder.replace("/images", "/masks")
            masks.mkdir()
            shutil.copy(os.path.join(fixture_dir, label, image), masks / "m.png")
    rows = read_dataset(spark, name, str(root)).select("path", "label", "source").collect()
    assert {r.path[len("file:"):]: r.label for r in rows} == expected
    assert {r.source for r in rows} == {name}


def test_download_offline_says_what_to_run(monkeypatch, tmp_path):
    import dataclasses
    import socket

    from covidspark.data import datasets

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/muhammedtalo/COVID-19.git"
    monkeypatch.setitem(datasets.KNOWN_DATASETS, "ozturk",
                        dataclasses.replace(datasets.KNOWN_DATASETS["ozturk"], url=url))
    with pytest.raises(datasets.DatasetUnavailableError) as error:
        datasets.download("ozturk", str(tmp_path / "ozturk"))
    assert f"git clone --depth 1 {url}" in str(error.value)
    with pytest.raises(datasets.DatasetUnavailableError, match="kaggle datasets download"):
        datasets.download("chowdhury", str(tmp_path / "c"))
    with pytest.raises(ValueError, match="Known: ozturk, cohen, chowdhury"):
        datasets.download("covidx", str(tmp_path))
