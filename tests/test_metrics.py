import numpy as np
import pytest

from hovit_nas.metrics import classification_metrics


def test_macro_metrics_against_a_hand_computation():
    # 3 classes; class 2 has support but is never predicted (zero-division path: precision 0)
    y_true = [0, 0, 0, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 1, 1, 0, 1]
    m = classification_metrics(y_true, y_pred, 3)
    # per class: precision 2/3, 2/5, 0; recall 2/3, 2/2, 0/3; F1 2/3, 4/7, 0
    assert m["top1"] == pytest.approx(4 / 8)
    assert m["precision_macro"] == pytest.approx((2 / 3 + 2 / 5 + 0) / 3)
    assert m["recall_macro"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 4 / 7 + 0) / 3)
    assert m["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 2, 0]] and m["n"] == 8


def test_classes_absent_from_the_split_are_left_out_of_the_macro_average():
    # issue 19: a class with no support has no recall; averaged in as 0 it made a perfect model 0.5
    m = classification_metrics(np.array([0, 1]), np.array([0, 1]), 4)
    assert m["top1"] == 1.0 and m["recall_macro"] == 1.0 and m["f1_macro"] == 1.0 and len(m["confusion"]) == 4
    assert m["classes_scored"] == 2 and m["classes_absent"] == [2, 3]
    wrong = classification_metrics(np.array([0, 1]), np.array([3, 1]), 4)  # predicting an absent class is an error
    assert wrong["recall_macro"] == pytest.approx(0.5) and wrong["precision_macro"] == pytest.approx(0.5)
