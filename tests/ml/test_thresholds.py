"""Threshold choice against brute force, and thresholds that travel with the saved model."""
import numpy as np
import pytest

from covidspark.ml.thresholds import apply_threshold, choose_threshold, parse_strategy, rates_at, saved_threshold, tradeoff_table


def _validation(seed=0, n=400):
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.25
    score = np.clip(rng.normal(0.35 + 0.3 * positive, 0.15), 0.001, 0.999)
    return positive, score


def _all_cuts(score):
    """Every distinct outcome: a cut just below each score and one above all of them."""
    values = np.unique(score)
    return np.r_[values - 1e-9, values[-1] + 1e-9]


@pytest.mark.parametrize("target", [0.8, 0.95, 1.0])
def test_target_recall_is_the_highest_threshold_reaching_it(target):
    positive, score = _validation()
    chosen = choose_threshold(positive, score, f"recall:{target}")
    t = chosen["threshold"]
    assert chosen["validation"]["recall"] >= target
    # Brute force: no higher cut reaches the target.
    better = [c for c in _all_cuts(score) if c > t and rates_at(positive, score, c)["recall"] >= target]
    assert not better or rates_at(positive, score, max(better))["predicted_positive"] == \
        chosen["validation"]["predicted_positive"]


@pytest.mark.parametrize("strategy,objective", [
    ("f1", lambda r: r["f1"]),
    ("youden", lambda r: r["recall"] + r["specificity"] - 1),
])
def test_f1_and_youden_maximise_their_objective(strategy, objective):
    positive, score = _validation(seed=2)
    chosen = choose_threshold(positive, score, strategy)
    best = max(objective(rates_at(positive, score, c)) for c in _all_cuts(score))
    assert objective(chosen["validation"]) == pytest.approx(best)


def test_fixed_threshold_strategy_and_errors():
    assert parse_strategy("0.1") == ("fixed", 0.1)
    assert choose_threshold([], [], "0.1")["threshold"] == 0.1
    for bad in ("recall:1.5", "2", "median", "0"):
        with pytest.raises(ValueError):
            parse_strategy(bad)
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([True, True], [0.2, 0.9], "f1")
    few = choose_threshold([True, False, False], [0.9, 0.2, 0.4], "f1")
    assert "only 1 COVID" in few["warning"]


def test_tradeoff_table_is_monotone_in_recall():
    positive, score = _validation(seed=4)
    table = tradeoff_table(positive, score, extra=[0.123])
    assert [r["threshold"] for r in table][:3] == [0.05, 0.1, 0.123]
    recalls = [r["recall"] for r in table]
    assert recalls == sorted(recalls, reverse=True)


@pytest.mark.parametrize("classifier", ["lr", "rf"])
def test_threshold_is_applied_and_saved_with_the_model(spark, features_df, classifier, tmp_path):
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array

    from covidspark.ml.pipelines import build_head, prepare_task

    data, _ = prepare_task(features_df, "binary")
    model = build_head("binary", classifier, seed=0).fit(data)
    scores = sorted(r.p for r in model.transform(data).select(
        vector_to_array("probability")[1].alias("p")).collect())
    # A threshold between two scores, away from 0.5, so that it changes predictions.
    threshold = float((scores[2] + scores[3]) / 2)
    apply_threshold(model, threshold)
    model.write().overwrite().save(str(tmp_path / "m"))
    loaded = PipelineModel.load(str(tmp_path / "m"))
    rows = loaded.transform(data).select(vector_to_array("probability")[1].alias("p"),
                                         "prediction", "predicted_label").collect()
    for r in rows:
        assert r.prediction == (1.0 if r.p > threshold else 0.0)
        assert r.predicted_label == ("covid" if r.p > threshold else "normal")
    above = sum(p > threshold for p in scores)
    assert 0 < above < len(scores) and sum(r.prediction for r in rows) == above
    assert saved_threshold(loaded) == pytest.approx(threshold, rel=1e-12)
    assert saved_threshold(build_head("binary", classifier, seed=0).fit(data)) == 0.5
