"""shared.metrics against numbers worked out by hand."""

import numpy as np
import pytest

from shared.metrics import classification_metrics, trainer_compute_metrics


def test_binary_metrics_by_hand():
    labels = [0, 0, 0, 1, 1, 1, 1, 1]
    preds = [0, 0, 1, 1, 1, 1, 0, 0]
    # positive class: tp=3, fp=1, fn=2 -> precision 3/4, recall 3/5, F1 2/3
    # negative class: tp=2, fp=2, fn=1 -> precision 1/2, recall 2/3, F1 4/7
    metrics = classification_metrics(labels, preds, ["neg", "pos"])

    assert metrics["accuracy"] == pytest.approx(5 / 8)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["f1_macro"] == pytest.approx((2 / 3 + 4 / 7) / 2)
    assert metrics["per_class"]["pos"] == pytest.approx({"precision": 0.75, "recall": 0.6, "f1": 2 / 3, "support": 5})
    assert metrics["per_class"]["neg"]["support"] == 3
    assert metrics["confusion_matrix"] == [[2, 1], [2, 3]]


def test_multiclass_has_no_binary_f1_and_counts_absent_classes():
    metrics = classification_metrics([0, 1, 2, 2], [0, 2, 2, 2], ["a", "b", "c"])
    assert "f1" not in metrics
    assert metrics["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 0, 2]]


def test_trainer_metrics_take_the_argmax_of_logits():
    logits = np.array([[2.0, -1.0], [0.1, 0.3], [0.0, 5.0], [3.0, 1.0]])
    metrics = trainer_compute_metrics(2)((logits, np.array([0, 1, 0, 0])))
    assert metrics == {"accuracy": 0.75, "f1_macro": pytest.approx(0.7333, abs=1e-4), "f1": pytest.approx(2 / 3)}
