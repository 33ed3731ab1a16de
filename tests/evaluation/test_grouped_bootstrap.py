"""Bootstrap intervals that draw a patient's images together (a cluster bootstrap).

References: the resamples expanded group by group in plain Python and scored
with scikit-learn; and the identity that a set whose every image appears m
times, grouped, has the intervals of the set without the copies.
"""
import numpy as np
import pytest
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType
from sklearn import metrics as skm

from covidspark.evaluation.metrics import bootstrap_intervals
from covidspark.evaluation.reports import comparison_markdown, format_table, markdown_report
from covidspark.evaluation.scoring import evaluate

LABELS = ["normal", "covid"]


def _noisy(rng, n, right=0.8):
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < right, y, 1 - y)
    p_covid = np.clip(0.5 + (pred - 0.5) * rng.random(n), 0, 1)
    return y, pred, np.stack([1 - p_covid, p_covid], axis=1)


def test_whole_groups_are_drawn_as_a_group_by_group_expansion_draws_them():
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 6, 60)  # 60 patients with 1-5 images each
    names = [f"patient-{i:03d}" for i in range(60)]
    groups = np.repeat(names, sizes)
    y, pred, prob = _noisy(rng, groups.size)
    shuffled = rng.permutation(groups.size)  # the rows' order must not matter
    ci = bootstrap_intervals(y[shuffled], pred[shuffled], LABELS, prob[shuffled],
                             n_resamples=200, seed=3, groups=groups[shuffled])
    assert (ci["resampled"], ci["units"]) == ("groups", 60)

    # Brute force: groups numbered in sorted order of their names, each draw of
    # group numbers expanded into those groups' rows, scored by scikit-learn.
    rows_of = {name: np.flatnonzero(groups == name) for name in sorted(set(names))}
    ordered = list(rows_of.values())
    reference = {"accuracy": [], "covid_precision": [], "covid_recall": [], "covid_f1": [],
                 "covid_roc_auc": []}
    draws = np.random.default_rng(3)
    for _ in range(200):
        idx = np.concatenate([ordered[g] for g in draws.integers(0, 60, 60)])
        reference["accuracy"].append(skm.accuracy_score(y[idx], pred[idx]))
        reference["covid_precision"].append(skm.precision_score(y[idx], pred[idx],
                                                                zero_division=0))
        reference["covid_recall"].append(skm.recall_score(y[idx], pred[idx], zero_division=0))
        reference["covid_f1"].append(skm.f1_score(y[idx], pred[idx], zero_division=0))
        reference["covid_roc_auc"].append(skm.roc_auc_score(y[idx], prob[idx, 1]))
    for name, values in reference.items():
        np.testing.assert_allclose(ci[name], np.quantile(values, [0.025, 0.975]), err_msg=name)


def test_a_patient_s_repeated_images_do_not_narrow_the_intervals():
    rng = np.random.default_rng(11)
    y, pred, prob = _noisy(rng, 150)
    once = bootstrap_intervals(y, pred, LABELS, prob, n_resamples=300)
    # Every patient imaged 6 times, each image scored like the patient's first.
    copies = 6
    y6, pred6, prob6 = (np.repeat(a, copies, axis=0) for a in (y, pred, prob))
    patients = np.repeat(np.arange(150), copies)
    grouped = bootstrap_intervals(y6, pred6, LABELS, prob6, n_resamples=300, groups=patients)
    by_image = bootstrap_intervals(y6, pred6, LABELS, prob6, n_resamples=300)
    for name in ("accuracy", "covid_precision", "covid_recall", "covid_f1", "covid_roc_auc"):
        np.testing.assert_allclose(grouped[name], once[name], err_msg=name)
    assert (once["resampled"], once["units"]) == ("images", 150)
    assert (grouped["resampled"], grouped["units"]) == ("groups", 150)
    assert (by_image["resampled"], by_image["units"]) == ("images", 900)
    # Drawn image by image, the copies look like independent evidence: about 1/sqrt(6)
    # of the honest width.
    width = {k: v["accuracy"][1] - v["accuracy"][0] for k, v in
             (("grouped", grouped), ("by_image", by_image))}
    assert width["by_image"] < 0.6 * width["grouped"]
    # One group per row is the image bootstrap, draw for draw.
    assert bootstrap_intervals(y, pred, LABELS, prob, n_resamples=300,
                               groups=np.arange(150)) == once


def _predictions(spark, rows):
    schema = StructType([StructField(c, StringType()) for c in
                         ("path", "image_id", "patient_id", "dup_group")]
                        + [StructField("label_index", DoubleType()),
                           StructField("prediction", DoubleType()),
                           StructField("probability", VectorUDT())])
    return spark.createDataFrame(rows, schema)


def test_evaluate_groups_test_rows_by_patient_duplicate_group_and_identical_files(spark):
    rng = np.random.default_rng(5)
    rows, expected_units = [], 0
    for patient in range(40):
        expected_units += 1
        for k in range(int(rng.integers(1, 4))):
            truth = float(patient % 3 == 0)
            guess = truth if rng.random() < 0.8 else 1 - truth
            rows.append([f"p{patient}-{k}.png", f"id-{patient:02d}-{k}", f"P{patient}", None,
                         truth, guess, Vectors.dense([1 - guess * 0.8, guess * 0.8])])
    # Patients 1 and 2 share a near-duplicate group; patient 3's first image is byte
    # for byte patient 4's: two merges. Three images without a patient: three units.
    rows[[r[2] for r in rows].index("P1")][3] = "dup-a"
    rows[[r[2] for r in rows].index("P2")][3] = "dup-a"
    rows[[r[2] for r in rows].index("P3")][1] = rows[[r[2] for r in rows].index("P4")][1]
    for k in range(3):
        rows.append([f"loose-{k}.png", f"id-loose-{k}", None, None, 1.0, 1.0,
                     Vectors.dense([0.1, 0.9])])
    expected_units += -2 + 3
    df = _predictions(spark, rows)

    metrics = evaluate(df, LABELS, bootstrap=200)
    ci = metrics["confidence_intervals"]
    assert (ci["resampled"], ci["units"], metrics["n"]) == ("groups", expected_units, len(rows))
    assert ci["grouped_by"] == ["patient_id", "dup_group", "image_id"]
    # The draws follow the units' contents, not the order in which Spark returns rows.
    again = evaluate(df.repartition(7, "path").orderBy(F.rand(1)), LABELS, bootstrap=200)
    assert again["confidence_intervals"] == ci
    # Without unit columns, image by image; the same with unit_cols=().
    plain = evaluate(df.drop("image_id", "patient_id", "dup_group"), LABELS, bootstrap=200)
    assert plain["confidence_intervals"] == evaluate(df, LABELS, bootstrap=200, unit_cols=())[
        "confidence_intervals"]
    assert (plain["confidence_intervals"]["resampled"],
            plain["confidence_intervals"]["units"]) == ("images", len(rows))

    # The reports say what was drawn.
    n = len(rows)
    said = f"{expected_units} groups of the {n} test images (a patient's images"
    assert said in format_table(metrics)
    run = {"task": "binary", "labels": LABELS, "model": "ResNet50", "classifier": "lr",
           "metrics": metrics, "data": {"description": "d"}, "counts": {"train": 1, "test": n},
           "weights": {"description": "w"}}
    assert f"(200 resamples, seed 0) over {said}" in markdown_report(run)
    comparison = {"data": "d", "weights": "w", "split": "s", "tasks": {"binary": {
        "runs": [run], "counts": run["counts"]}}}
    assert f"bootstrap intervals over {said}" in comparison_markdown(comparison)
    # With the baseline, a column of each run's paired difference to it.
    with_baseline = {**comparison, "tasks": {"binary": {
        "runs": [{**run, "difference": {"difference": 0.031, "interval": [-0.007, 0.069]}}],
        "counts": run["counts"], "baseline": {"name": "baseline", "metrics": plain}}}}
    table = comparison_markdown(with_baseline)
    assert "| accuracy vs baseline (paired) |" in table and "| +0.031 [-0.007, +0.069] |" in table
    assert "paired" not in comparison_markdown(comparison)
    assert f"over the {n} test images" in comparison_markdown(
        {**comparison, "tasks": {"binary": {"runs": [{**run, "metrics": plain}],
                                            "counts": run["counts"]}}})


def test_groups_must_match_the_rows():
    with pytest.raises(ValueError, match="3 values for 4 rows"):
        bootstrap_intervals([0, 1, 0, 1], [0, 1, 1, 1], LABELS, groups=["a", "b", "c"])


def test_paired_accuracy_matches_rows_by_path_and_draws_their_units(spark):
    from covidspark.evaluation.metrics import paired_difference
    from covidspark.evaluation.scoring import paired_accuracy

    rng = np.random.default_rng(8)
    paths = [f"img-{i:03d}.png" for i in range(60)]
    patients = [f"P{i // 3}" for i in range(60)]
    truth = rng.integers(0, 2, 60).astype(float)
    guess_a = np.where(rng.random(60) < 0.9, truth, 1 - truth)
    guess_b = np.where(rng.random(60) < 0.75, truth, 1 - truth)

    def scored(guess, order):
        return _predictions(spark, [[paths[i], f"id-{i}", patients[i], None, float(truth[i]),
                                     float(guess[i]), Vectors.dense([1 - guess[i], guess[i]])]
                                    for i in order])

    a = evaluate(scored(guess_a, range(60)), LABELS, bootstrap=300, seed=4)
    b = evaluate(scored(guess_b, rng.permutation(60)), LABELS, bootstrap=300, seed=4)
    got = paired_accuracy(a, b)
    # A unit is named by its smallest image id (the groups' numbering follows the names).
    name = {p: min(f"id-{i}" for i in range(60) if patients[i] == p) for p in patients}
    assert got == paired_difference(guess_a == truth, guess_b == truth,
                                    groups=[name[p] for p in patients], n_resamples=300, seed=4)
    assert (got["resampled"], got["units"]) == ("groups", 20)
    # Not the same images, or no intervals: nothing to pair.
    fewer = evaluate(scored(guess_b, range(59)), LABELS, bootstrap=300)
    assert paired_accuracy(a, fewer) is None
    assert paired_accuracy(evaluate(scored(guess_a, range(60)), LABELS, bootstrap=0), b) is None
    assert paired_accuracy(dict(a), b) is None  # a copy keeps no rows


def test_each_run_is_paired_with_the_most_accurate_on_the_same_rows(spark):
    from covidspark.ml.experiment import differences_to_best

    rng = np.random.default_rng(11)
    truth = rng.integers(0, 2, 80).astype(float)
    guesses = {"weak": np.where(rng.random(80) < 0.7, truth, 1 - truth),
               "strong": np.where(rng.random(80) < 0.95, truth, 1 - truth)}
    guesses["tie"] = guesses["strong"].copy()  # as accurate: the first of a tie is the best

    def evaluated(guess):
        rows = [[f"img-{i:02d}.png", f"id-{i}", None, None, float(truth[i]), float(guess[i]),
                 Vectors.dense([1 - guess[i], guess[i]])] for i in range(80)]
        return evaluate(_predictions(spark, rows), LABELS, bootstrap=200, seed=3)

    metrics = [evaluated(g) for g in guesses.values()]
    best, differences = differences_to_best(metrics)
    right = {name: (g == truth).mean() for name, g in guesses.items()}
    assert best == 1 and right["strong"] > right["weak"]
    weak, _, tie = differences
    assert differences[1] is None
    # The gap is the two accuracies' (counted here), its interval paired: row by row.
    assert weak["difference"] == pytest.approx(right["strong"] - right["weak"])
    assert weak["interval"][0] <= weak["difference"] <= weak["interval"][1]
    assert (tie["difference"], tie["interval"]) == (0.0, [0.0, 0.0])
    assert differences_to_best(metrics[:1]) == (None, [None])

    # comparison.md: a column of each run's gap to the best, "best" on the best's row.
    runs = [{"model": name, "classifier": "lr", "metrics": m, "best_minus_this": d}
            for name, m, d in zip(guesses, metrics, differences)]
    comparison = {"data": "d", "weights": "w", "split": "s", "tasks": {"binary": {
        "runs": runs, "counts": {"train": 1, "test": 80}, "best": "strong + lr"}}}
    table = comparison_markdown(comparison)
    low, high = weak["interval"]
    assert "| best's accuracy minus this (paired) |" in table
    assert f"| {weak['difference']:+.3f} [{low:+.3f}, {high:+.3f}] |" in table
    assert "| best |" in table and "Best: strong + lr, the most accurate" in table
