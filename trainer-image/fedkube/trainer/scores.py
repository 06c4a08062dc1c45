"""The ROC AUC of a binary task, in numpy: scikit-learn's ``roc_auc_score`` would cost a site
a second of imports before its first evaluation. A test checks the two agree."""

from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The probability that a random positive scores above a random negative, ties counting
    half (the area under the ROC curve, trapezoids between its points). Labels are 0 and 1,
    and both must occur."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError("the ROC AUC needs both classes among the labels")
    # Mann-Whitney: tied scores share the mean of the ranks they span.
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    mean_rank = last_rank - (counts - 1) / 2.0
    rank_sum = float(mean_rank[inverse][labels].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)
