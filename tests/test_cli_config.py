"""--config YAML files, and the progress line."""
import pytest

from covidspark.cli import main, parse_args
from covidspark.runtime.progress import Progress, format_progress


def test_config_file_sets_flags_and_the_command_line_overrides(tmp_path):
    config = tmp_path / "params.yaml"
    config.write_text("task: 3class\nclassifier: rf\ndata: [a, b]\nlabel-map: ozturk\n"
                      "threshold: 0.1\nbootstrap: 200\nno_such: 1\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['no_such'\]; valid: .*label-map"):
        parse_args(["train", "--config", str(config)])
    config.write_text("task: 3class\nclassifier: rf\ndata: [a, b]\nlabel-map: ozturk\n"
                      "threshold: 0.1\nbootstrap: 200\nbaseline: false\n")
    args = parse_args(["train", "--config", str(config)])
    assert (args.task, args.classifier, args.data, args.threshold, args.bootstrap) == (
        "3class", "rf", ["a", "b"], "0.1", 200)
    assert args.label_map["Covid-19"] == "covid" and args.baseline is False
    args = parse_args(["train", "--config", str(config), "--task", "binary", "--data", "c"])
    assert args.task == "binary" and args.data == ["c"] and args.classifier == "rf"
    compare = tmp_path / "compare.yaml"
    compare.write_text("models: [ResNet50, VGG16]\ntasks: binary\n")
    args = parse_args(["compare", "--config", str(compare)])
    assert args.models == ["ResNet50", "VGG16"] and args.tasks == ["binary"]


def test_bad_config_exits_2(tmp_path, caplog):
    assert main(["train", "--config", str(tmp_path / "absent.yaml")]) == 2
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert main(["train", "--config", str(tmp_path / "list.yaml")]) == 2
    assert "expected a mapping" in caplog.text


def test_progress_lines():
    assert format_progress("featurize", 480, 1124, 69.5) == (
        "featurize: 480/1124 images (42.7 %), 6.9 images/s, ETA 93 s")
    assert format_progress("featurize", 10, None, 2.0) == "featurize: 10 images, 5.0 images/s"
    done = iter(range(0, 1000, 7))
    lines = []
    with Progress("work", 100, lambda: next(done), interval=0.01, log=lines.append) as progress:
        import time

        time.sleep(0.1)
    assert lines == progress.lines and len(lines) >= 3
    assert all(line.startswith("work: ") and "/100 images" in line for line in lines)
