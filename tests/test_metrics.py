import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from hovit_nas.metrics import classification_metrics, confusion


def test_metrics_match_scikit_learn_on_a_known_confusion():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 4, 200))
    y_pred[y_pred == 3] = 2  # class 3 is never predicted: zero-division path
    cm = confusion(y_true, y_pred, 4)
    assert (cm == confusion_matrix(y_true, y_pred, labels=range(4))).all()
    m = classification_metrics(cm)
    assert m["top1"] == pytest.approx(accuracy_score(y_true, y_pred))
    kw = dict(average="macro", labels=range(4), zero_division=0)
    assert m["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, **kw))
    assert m["recall_macro"] == pytest.approx(recall_score(y_true, y_pred, **kw))
    assert m["precision_macro"] == pytest.approx(precision_score(y_true, y_pred, **kw))
