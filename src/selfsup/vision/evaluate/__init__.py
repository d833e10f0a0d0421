"""Evaluation protocols on frozen features (AugSelf, NeurIPS 2021; REFERENCES.md section 2).

Pure torch, CPU or GPU, deterministic for a given seed and device:

- :mod:`.features`: :func:`extract_features` (centre view, eval mode, no grad),
  :func:`extract_features_from_loader`; metrics :func:`top1_accuracy`,
  :func:`mean_per_class_accuracy`.
- :mod:`.knn`: weighted kNN on cosine similarity, votes ``exp(sim / T)`` (k 20, T 0.07).
- :mod:`.linear`: the L-BFGS linear probe, mean cross-entropy ``+ (lambda / 2) ||W||^2``,
  lambda picked on a validation split among 45 log-spaced values in ``[1e-6, 1e5]``, refit on
  train + val.
- :mod:`.fewshot`: N-way K-shot logistic regression over seeded tasks, mean +- 95% interval.
"""

from selfsup.vision.evaluate.features import (
    extract_features,
    extract_features_from_loader,
    mean_per_class_accuracy,
    top1_accuracy,
)
from selfsup.vision.evaluate.fewshot import confidence_interval95, few_shot_eval, sample_tasks
from selfsup.vision.evaluate.knn import knn_evaluate, knn_predict, knn_votes
from selfsup.vision.evaluate.linear import (
    LogisticRegression,
    default_l2_grid,
    fit_logistic_regression,
    linear_probe,
    logistic_objective,
    stratified_split,
)

__all__ = [
    "LogisticRegression",
    "confidence_interval95",
    "default_l2_grid",
    "extract_features",
    "extract_features_from_loader",
    "few_shot_eval",
    "fit_logistic_regression",
    "knn_evaluate",
    "knn_predict",
    "knn_votes",
    "linear_probe",
    "logistic_objective",
    "mean_per_class_accuracy",
    "sample_tasks",
    "stratified_split",
    "top1_accuracy",
]
