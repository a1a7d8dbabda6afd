"""Classification metrics with scikit-learn (evaluate.load needs the Hub; these do not)."""

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_metrics(labels, predictions, names: list[str]) -> dict:
    """Accuracy, macro F1, binary F1 of the second label for two classes (the book's metric), per-class
    precision/recall/F1/support and the confusion matrix (rows: true label, columns: predicted)."""
    ids = list(range(len(names)))
    metrics = summary_metrics(labels, predictions, len(names))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=ids, zero_division=0)
    metrics["per_class"] = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
    }
    metrics["confusion_matrix"] = confusion_matrix(labels, predictions, labels=ids).tolist()
    return metrics


def summary_metrics(labels, predictions, num_labels: int) -> dict[str, float]:
    """The scalar metrics: what the Trainer logs each evaluation and what the leaderboard sorts by."""
    ids = list(range(num_labels))
    metrics = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_macro": float(f1_score(labels, predictions, labels=ids, average="macro", zero_division=0)),
    }
    if num_labels == 2:
        metrics["f1"] = float(f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0))
    return metrics


def trainer_compute_metrics(num_labels: int):
    """A `compute_metrics` for transformers.Trainer: logits in, scalar metrics out."""

    def compute(eval_pred):
        logits, labels = eval_pred
        return summary_metrics(labels, np.argmax(logits, axis=-1), num_labels)

    return compute
