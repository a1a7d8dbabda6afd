"""A repo id or a local folder in, a predictor out: label probabilities for a batch of texts.

Tells a transformers classifier from a SetFit model by the files the repo holds. Downloads only files that
cannot run code (JSON, safetensors, tokenizer vocabularies) unless the caller trusts the repo's pickled
SetFit head; otherwise SetFit models are served through the pickle-free model_head.safetensors.
"""

import json
import os
import time
from dataclasses import dataclass, field

import httpx2
import numpy as np
import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from shared.errors import InputError
from shared.hub import load_pretrained, load_sentence_transformer
from shared.results import RESULTS_FILE
from shared.setfit_head import HEAD_FILE, PortableHead

# Files that cannot execute code when loaded: configs, weights in safetensors, tokenizer vocabularies, the card.
SAFE_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "README.md"]
PICKLED_HEAD = "model_head.pkl"
SETFIT_CONFIG = "config_setfit.json"


@dataclass
class ModelSpec:
    """One model the app serves: a Hub repo id (optionally pinned to a revision) or a local folder."""

    source: str
    revision: str | None = None
    trust_pickle: bool = False  # only for repos whose owner you trust: model_head.pkl runs code when loaded

    @property
    def name(self) -> str:
        return self.source if self.revision is None else f"{self.source}@{self.revision}"


@dataclass
class Prediction:
    label: str
    scores: dict[str, float]


@dataclass
class Predictor:
    """Classifies texts with one model. `info` is the model's results.json (empty if it has none)."""

    name: str
    kind: str  # "transformers" or "setfit"
    labels: list[str]
    folder: str
    info: dict = field(default_factory=dict)
    _probabilities: object = field(default=None, repr=False)

    def predict(self, texts: list[str], batch_size: int = 32) -> list[Prediction]:
        if not texts:
            return []
        probabilities = np.concatenate(
            [self._probabilities(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        )
        return [
            Prediction(
                label=self.labels[int(row.argmax())],
                scores={label: float(p) for label, p in zip(self.labels, row, strict=True)},
            )
            for row in probabilities
        ]

    def timed_predict(self, texts: list[str]) -> tuple[list[Prediction], float]:
        """Predictions and the wall time they took, in milliseconds."""
        start = time.perf_counter()
        predictions = self.predict(texts)
        return predictions, (time.perf_counter() - start) * 1000


def load_predictor(spec: ModelSpec, token: str | bool | None = None) -> Predictor:
    """Download (if needed) and load one model. `token=False` sends no token at all, for repos a visitor named.

    Any failure (a bad id, a missing repo, a model of another kind) is one InputError naming the model.
    """
    folder = _local_folder(spec, token)
    if not os.path.exists(os.path.join(folder, "config.json")):
        raise InputError(f"{spec.name} holds no model: there is no config.json in it")
    info = _read_json(os.path.join(folder, RESULTS_FILE)) or {}
    if os.path.exists(os.path.join(folder, SETFIT_CONFIG)):
        labels, probabilities = _setfit(folder, spec)
        return Predictor(spec.name, "setfit", labels, folder, info, probabilities)
    labels, probabilities = _transformers(folder)
    return Predictor(spec.name, "transformers", labels, folder, info, probabilities)


def _local_folder(spec: ModelSpec, token: str | bool | None) -> str:
    if os.path.isdir(spec.source):
        return spec.source
    try:
        validate_repo_id(spec.source)
    except HFValidationError as err:
        raise InputError(f"{spec.source!r} is neither a local folder nor a valid Hub repo id") from err
    patterns = SAFE_FILES + ([PICKLED_HEAD] if spec.trust_pickle else [])
    try:
        return snapshot_download(spec.source, revision=spec.revision, allow_patterns=patterns, token=token)
    except (HfHubHTTPError, httpx2.TransportError, OSError) as err:
        raise InputError(f"could not download {spec.name}: {err}") from err


def _transformers(folder: str):
    tokenizer = load_pretrained(AutoTokenizer, folder)
    model = load_pretrained(AutoModelForSequenceClassification, folder).eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    @torch.inference_mode()
    def probabilities(texts: list[str]) -> np.ndarray:
        batch = tokenizer(texts, truncation=True, padding=True, return_tensors="pt").to(device)
        return torch.softmax(model(**batch).logits.float(), dim=-1).cpu().numpy()

    return labels, probabilities


def _setfit(folder: str, spec: ModelSpec):
    config = _read_json(os.path.join(folder, SETFIT_CONFIG)) or {}
    if spec.trust_pickle and os.path.exists(os.path.join(folder, PICKLED_HEAD)):
        from setfit import SetFitModel

        model = SetFitModel.from_pretrained(folder)
        labels = model.labels or [str(c) for c in range(len(model.predict_proba(["x"])))]
        return labels, lambda texts: np.asarray(model.predict_proba(texts, as_numpy=True))
    if not os.path.exists(os.path.join(folder, HEAD_FILE)):
        raise InputError(
            f"{spec.name} is a SetFit model with only a pickled head; list it as trusted (trust_pickle) to load it"
        )
    body = load_sentence_transformer(folder)
    head = PortableHead.load(folder)
    labels = config.get("labels") or [str(c) for c in head.classes]
    normalize = bool(config.get("normalize_embeddings", False))

    def probabilities(texts: list[str]) -> np.ndarray:
        embeddings = body.encode(texts, normalize_embeddings=normalize, convert_to_numpy=True)
        aligned = np.zeros((len(texts), len(labels)))
        aligned[:, head.classes] = head.predict_proba(embeddings)  # the head's columns follow its class ids
        return aligned

    return labels, probabilities


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
