"""Classification metrics as the paper reports them (macro averages): scikit-learn's."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true, y_pred, num_classes: int) -> dict:
    """Top-1 plus macro precision/recall/F1 over all ``num_classes`` (a class with no support or
    no predictions scores 0), and the confusion matrix."""
    labels = list(range(num_classes))
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if len(y_true) == 0:
        return {"top1": 0.0, "f1_macro": 0.0, "recall_macro": 0.0, "precision_macro": 0.0,
                "confusion": np.zeros((num_classes, num_classes), np.int64).tolist(), "n": 0}
    p, r, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    return {"top1": float(accuracy_score(y_true, y_pred)), "f1_macro": float(f1), "recall_macro": float(r),
            "precision_macro": float(p), "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
            "n": int(len(y_true))}
