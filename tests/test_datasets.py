import csv
import filecmp
import os

import numpy as np
import pytest
from PIL import Image

from covidspark.datasets import CLASSES, synthetic


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
    from covidspark.datasets import render_xray

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
