"""Classification metrics as the paper reports them (macro averages): scikit-learn's, averaged
over the classes present in the split scored.

A class with no sample in a split has no recall (0/0); averaging it in as 0, as
``precision_recall_fscore_support(labels=all classes, zero_division=0)`` does, reports a perfect
model at (K-1)/K macro recall. So the macro scores average over the classes that have support in
``y_true`` (scikit-learn's ``labels=`` restricted to them); predictions of an absent class still
count as errors of the true class. ``classes_absent`` lists the classes left out.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int,
                           probs: Optional[np.ndarray] = None) -> dict:
    """Top-1, macro precision/recall/F1 over the classes present in ``y_true`` (a present class
    with no predictions has precision 0), and the confusion matrix over all ``num_classes``.

    Args:
        y_true: true class indices, shape (N,), in ``0..num_classes-1``.
        y_pred: predicted class indices, shape (N,).
        num_classes: K, the size of the confusion matrix.
    Returns:
        ``top1``, ``f1_macro``, ``recall_macro``, ``precision_macro`` (floats in [0, 1]),
        ``confusion`` (num_classes x num_classes counts, rows true), ``n`` (samples),
        ``classes_scored`` (how many classes the macro scores average over) and
        ``classes_absent`` (class indices with no sample in ``y_true``); with ``probs`` (N, K)
        class probabilities, also the threshold-free ``auc`` and ``nll`` (``threshold_free``).
    """
    # imported here, not with the package: scikit-learn brings scipy and about 1 CPU-second of imports
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    present = sorted(set(y_true.tolist()))
    absent = [c for c in range(num_classes) if c not in set(present)]
    if len(y_true) == 0:
        return {"top1": 0.0, "f1_macro": 0.0, "recall_macro": 0.0, "precision_macro": 0.0,
                "confusion": np.zeros((num_classes, num_classes), np.int64).tolist(), "n": 0,
                "classes_scored": 0, "classes_absent": absent}
    p, r, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, average="macro", zero_division=0)
    extra = threshold_free(y_true, probs) if probs is not None else {}
    return {**extra, "top1": float(accuracy_score(y_true, y_pred)), "f1_macro": float(f1), "recall_macro": float(r),
            "precision_macro": float(p),
            "confusion": confusion_matrix(y_true, y_pred, labels=list(range(num_classes))).tolist(),
            "n": int(len(y_true)), "classes_scored": len(present), "classes_absent": absent}


def macro_note(m: dict, classes: list[str]) -> str:
    """'' when every class is scored, else '(macro over 8 of 9 classes; none of BACK here)'."""
    absent = m.get("classes_absent") or []
    if not absent:
        return ""
    names = ", ".join(classes[c] if c < len(classes) else str(c) for c in absent)
    return f"(macro over {m['classes_scored']} of {m['classes_scored'] + len(absent)} classes; no samples of {names})"


def threshold_free(y_true: Sequence[int], probs: np.ndarray) -> dict:
    """Scores that do not depend on where the decision threshold sits (issue 32): ``auc``, the
    area under the ROC curve (binary: of the last class's probability; more classes: the macro
    one-vs-rest average over the classes present, scikit-learn's ``roc_auc_score(multi_class="ovr")``),
    None when fewer than two classes are present; and ``nll``, the mean negative log-likelihood
    of the true class (scikit-learn's ``log_loss``, probabilities clipped as it does), lower is better.

    Args:
        y_true: (N,) class indices.
        probs: (N, K) class probabilities (rows sum to 1; float16 is accepted).
    """
    from sklearn.metrics import log_loss, roc_auc_score

    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum(1, keepdims=True)  # float16 storage leaves rows a little off 1
    k = p.shape[1]
    present = sorted(set(y.tolist()))
    auc = None
    if len(present) >= 2:
        if k == 2:
            auc = float(roc_auc_score(y, p[:, 1]))
        else:
            sub = p[:, present] / p[:, present].sum(1, keepdims=True)
            auc = float(roc_auc_score(np.searchsorted(present, y), sub, multi_class="ovr", average="macro")
                        if len(present) > 2 else roc_auc_score(y == present[1], sub[:, 1]))
    nll = float(log_loss(y, p, labels=list(range(k)))) if len(y) else None
    return {"auc": auc, "nll": nll}
