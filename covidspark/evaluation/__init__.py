"""Evaluation: metrics with confidence intervals, scoring Spark predictions, reports and figures."""
from covidspark.evaluation.metrics import metrics_from_confusion
from covidspark.evaluation.reports import format_table, write_report
from covidspark.evaluation.scoring import evaluate, positive_scores

__all__ = ["evaluate", "format_table", "metrics_from_confusion", "positive_scores", "write_report"]
