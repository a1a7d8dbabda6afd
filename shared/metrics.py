"""Classification metrics with scikit-learn (evaluate.load needs the Hub; these do not)."""

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

MULTI_LABEL = "multi_label_classification"  # transformers' problem_type for a set of labels per text


def classification_metrics(labels, predictions, names: list[str]) -> dict:
    """Accuracy, macro F1, binary F1 of the second label for two classes (the book's metric), per-class
    precision/recall/F1/support and the confusion matrix (rows: true label, columns: predicted)."""
    ids = list(range(len(names)))
    metrics = summary_metrics(labels, predictions, len(names))
    metrics["per_class"] = _per_class(labels, predictions, names, ids)
    metrics["confusion_matrix"] = confusion_matrix(labels, predictions, labels=ids).tolist()
    return metrics


def multi_label_metrics(labels, predictions, names: list[str]) -> dict:
    """For 0/1 matrices (one column per label): subset accuracy (every label of a text right), micro and macro F1,
    and per-label precision/recall/F1/support (support: texts that carry the label)."""
    metrics = multi_label_summary(labels, predictions)
    metrics["per_class"] = _per_class(labels, predictions, names)
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


def multi_label_summary(labels, predictions) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(labels, predictions)),  # on 0/1 matrices: subset accuracy
        "f1_micro": float(f1_score(labels, predictions, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(labels, predictions, average="macro", zero_division=0)),
    }


def over_threshold(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Multi-label decisions: every label whose probability reaches the threshold."""
    return (np.asarray(probabilities) >= threshold).astype(int)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64)))


def trainer_compute_metrics(num_labels: int, threshold: float | None = None):
    """A `compute_metrics` for transformers.Trainer: logits in, scalar metrics out. With a `threshold`, the model
    is multi-label: each label is decided by its own sigmoid."""

    def compute(eval_pred):
        logits, labels = eval_pred
        if threshold is not None:
            return multi_label_summary(labels.astype(int), over_threshold(sigmoid(logits), threshold))
        return summary_metrics(labels, np.argmax(logits, axis=-1), num_labels)

    return compute


def _per_class(labels, predictions, names: list[str], ids: list[int] | None = None) -> dict:
    """Per label; `ids` lists every class, so that one absent from both labels and predictions still has a row."""
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=ids, zero_division=0)
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
    }
