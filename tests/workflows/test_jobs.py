"""The spark-submit entry points, run as a user runs them."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, clean_env
from covidspark.cli import main


def test_train_dt_3class(fixture_dir, tmp_path, spark):
    # In this process (the suite's Spark session, warm workers): what jobs/train_dt.py runs.
    out = tmp_path / "dt"
    assert main(["train", "--classifier", "dt", "--data", fixture_dir, "--task", "3class",
                 "--weights", "random", "--bootstrap", "50", "--no-baseline",
                 "--out", str(out)]) == 0
    run = json.loads((out / "metrics.json").read_text())
    assert run["classifier"] == "dt" and run["labels"] == ["normal", "covid", "pneumonia"]
    per_class = run["metrics"]["per_class"]
    assert sum(c["support"] for c in per_class.values()) == run["counts"]["test"] == 3
    assert "pneumonia" in (out / "report.md").read_text()


@pytest.mark.subprocess
def test_bad_input_exits_2_with_a_clear_message(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "jobs", "train_rf.py"), "--master", "local[1]",
         "--data", str(tmp_path / "no-such-folder"), "--weights", "random", "--out", str(tmp_path)],
        capture_output=True, text=True, env=clean_env(), timeout=600,
    )
    assert result.returncode == 2
    assert "Image folder not found" in result.stderr and "no-such-folder" in result.stderr


def test_lenient_job_with_patients_lists_rejects_and_groups_patients(fixture_dir, tmp_path, spark,
                                                                     capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(fixture_dir, data)
    (data / "covid" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (data / "Lateral").mkdir()  # a folder that is not a class: its images are rejects
    shutil.copy(data / "normal" / sorted(os.listdir(data / "normal"))[0], data / "Lateral" / "side.png")
    names = sorted(os.listdir(data / "covid")) + sorted(os.listdir(data / "normal"))
    patients = tmp_path / "patients.csv"
    patients.write_text("path,patient_id\n" + "".join(
        f"data/{'covid' if n.startswith('syn-covid') or n == 'truncated.png' else 'normal'}/{n},"
        f"p{i // 3}\n" for i, n in enumerate(names)))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--patients", str(patients), "--lenient",
                 "--weights", "random", "--bootstrap", "50", "--no-baseline",
                 "--out", str(out)]) == 0
    run = json.loads((out / "metrics.json").read_text())
    reasons = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in run["rejected"]}
    assert sorted(reasons) == ["side.png", "truncated.png"]
    assert "label 'Lateral' is not one of normal, covid, pneumonia" in reasons["side.png"]
    # The reason, without its path again (the decode error's message named the file).
    assert reasons["truncated.png"].startswith("not a decodable image (")
    # The summary names them and where all of them are.
    printed = capsys.readouterr().out
    assert f"  rejected file:{data}/covid/truncated.png: not a decodable image (" in printed
    assert (f"all 2 rejected files, with their reasons: {out / 'metrics.json'}, under rejected"
            in printed)
    assert "grouped by patient_id" in run["split"]["method"]
    assert run["counts"]["total"] == 12
    # The intervals draw the test set's patients (three images each), not its images.
    ci = run["metrics"]["confidence_intervals"]
    assert ci, (run["counts"], run["metrics"]["n"])
    assert ci["resampled"] == "groups" and ci["units"] == -(-run["counts"]["test"] // 3)


def test_datasets_describe_command(fixture_dir, tmp_path, spark, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(fixture_dir, data)
    first = sorted(os.listdir(data / "normal"))[0]
    shutil.copy(data / "normal" / first, data / "normal" / ("again-" + first))
    (data / "covid" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert main(["datasets", "describe", str(data), "--json", str(tmp_path / "report.json")]) == 0
    stdout = capsys.readouterr().out
    # The reject, with its path once, and where the whole list is.
    assert f"  rejected file:{data}/covid/truncated.png: not a decodable image (" in stdout
    assert (f"the rejected file, with its reason: {tmp_path / 'report.json'}, "
            "under rejected") in stdout
    assert "images: 19" in stdout
    assert "by label: covid 6, normal 7, pneumonia 6" in stdout
    assert "exact (same bytes)" in stdout and f"again-{first}" in stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["duplicate_groups"]) == 1
    # --data, as train spells it, says the same (argparse once read it as --dataset).
    assert main(["datasets", "describe", "--data", str(data)]) == 0
    assert "by label: covid 6, normal 7, pneumonia 6" in capsys.readouterr().out
    assert main(["datasets", "describe"]) == 2 and main(["datasets", "describe", "--data",
                                                         str(data), str(data)]) == 2
