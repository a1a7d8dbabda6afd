"""A SetFit classification head in safetensors, so that it can be loaded without unpickling.

setfit saves its head with joblib, a pickle: loading one runs whatever code the file names, so a model from an
untrusted repo must not be loaded that way. Beside setfit's model_head.pkl the SetFit trainer also writes
model_head.safetensors: the logistic regression's coefficients or the differentiable head's linear layer, with
what is needed to apply them in the file's metadata. PortableHead applies them with numpy alone.
"""

import json
import os

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from setfit.modeling import SetFitHead
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from shared.errors import InputError

HEAD_FILE = "model_head.safetensors"


def save_portable_head(head, folder: str) -> str:
    """Write `head` (a LogisticRegression, one per label in a OneVsRestClassifier, or a SetFitHead) to
    folder/model_head.safetensors."""
    if isinstance(head, LogisticRegression):
        weight, bias = head.coef_, head.intercept_
        metadata = {"head_type": "logistic_regression", "activation": "sigmoid" if len(weight) == 1 else "softmax"}
        classes = head.classes_.tolist()
    elif isinstance(head, OneVsRestClassifier):  # multi-label: one binary logistic regression per label
        weight = np.concatenate([estimator.coef_ for estimator in head.estimators_])
        bias = np.concatenate([estimator.intercept_ for estimator in head.estimators_])
        metadata = {"head_type": "one_vs_rest_logistic_regression", "activation": "multi_sigmoid"}
        classes = list(range(len(weight)))
    elif isinstance(head, SetFitHead):
        weight = head.linear.weight.detach().cpu().numpy()
        bias = head.linear.bias.detach().cpu().numpy() if head.linear.bias is not None else np.zeros(len(weight))
        # SetFitHead divides logits by (temperature + eps) before its activation.
        weight, bias = weight / (head.temperature + head.eps), bias / (head.temperature + head.eps)
        metadata = {"head_type": "differentiable", "activation": "multi_sigmoid" if head.multitarget else "softmax"}
        classes = list(range(head.out_features))
    else:
        raise TypeError(f"cannot save a SetFit head of type {type(head).__name__} without pickle")
    metadata["classes"] = json.dumps(classes)
    path = os.path.join(folder, HEAD_FILE)
    tensors = {"weight": torch.tensor(np.asarray(weight, dtype=np.float64)), "bias": torch.tensor(np.asarray(bias))}
    save_file({k: v.to(torch.float64).contiguous() for k, v in tensors.items()}, path, metadata=metadata)
    return path


class PortableHead:
    """A linear head read from model_head.safetensors: embeddings in, class probabilities out."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, activation: str, classes: list):
        self.weight, self.bias, self.activation, self.classes = weight, bias, activation, classes

    @classmethod
    def load(cls, folder: str) -> "PortableHead":
        path = os.path.join(folder, HEAD_FILE)
        try:
            with safe_open(path, framework="numpy") as f:
                metadata = f.metadata() or {}
                weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
            return cls(weight, bias, metadata["activation"], json.loads(metadata["classes"]))
        except (SafetensorError, KeyError, json.JSONDecodeError) as err:
            problem = f"{type(err).__name__}: {err}"
            raise InputError(f"{path} is damaged or was not written by this project ({problem})") from err

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """One column per entry of `classes`, in that order."""
        scores = np.asarray(embeddings, dtype=np.float64) @ self.weight.T + self.bias
        if self.activation == "sigmoid":  # scikit-learn's binary logistic regression: one score for classes[1]
            positive = 1 / (1 + np.exp(-scores[:, 0]))
            return np.column_stack([1 - positive, positive])
        if self.activation == "multi_sigmoid":
            return 1 / (1 + np.exp(-scores))
        scores = scores - scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, embeddings: np.ndarray) -> list:
        return [self.classes[i] for i in self.predict_proba(embeddings).argmax(axis=1)]
