"""Classification metrics as the paper reports them (macro averages), from a confusion matrix."""
from __future__ import annotations

import numpy as np


def confusion(y_true, y_pred, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def classification_metrics(cm: np.ndarray) -> dict:
    """Top-1 plus macro precision/recall/F1 (a class with no support or predictions scores 0)."""
    tp = np.diag(cm).astype(np.float64)
    precision = _safe_div(tp, cm.sum(0).astype(np.float64))
    recall = _safe_div(tp, cm.sum(1).astype(np.float64))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = cm.sum()
    return {
        "top1": float(tp.sum() / total) if total else 0.0,
        "f1_macro": float(f1.mean()),
        "recall_macro": float(recall.mean()),
        "precision_macro": float(precision.mean()),
        "confusion": cm.tolist(),
        "n": int(total),
    }
