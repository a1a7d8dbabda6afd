"""A repo id or a local folder in, a predictor out: label probabilities for a batch of texts; or a fill-mask
encoder out: the likeliest words for a masked sentence.

Tells a transformers classifier from a SetFit model by the files the repo holds. Downloads only files that
cannot run code (JSON, safetensors, tokenizer vocabularies), into huggingface_hub's one cache, unless the caller
trusts the repo's pickled SetFit head; otherwise SetFit models are served through the pickle-free
model_head.safetensors. Models go to the GPU when there is one.

On CPU, a model whose folder holds int8 ONNX files made from its current weights (shared.onnx_export) is served
through ONNX Runtime from them: several times faster, with the same labels but for a few texts in a thousand
(benchmarks/results/serving.md). Files made from other weights are ignored, and the safetensors weights are served,
as they are for a model without any.
"""

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field

import httpx2
import numpy as np
import onnxruntime
import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import filter_repo_objects, validate_repo_id
from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from shared.errors import InputError
from shared.hub import load_pretrained, load_sentence_transformer
from shared.metrics import MULTI_LABEL
from shared.onnx_export import INT8_FILE, matching_int8
from shared.positions import longest_input
from shared.results import RESULTS_FILE
from shared.setfit_head import HEAD_FILE, PortableHead

# Files that cannot execute code when loaded: configs, weights in safetensors, tokenizer vocabularies, the card, and
# the int8 ONNX graph (standard operators only: ONNX Runtime runs no code that a file brings).
SAFE_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "README.md", INT8_FILE]
PICKLED_HEAD = "model_head.pkl"
SETFIT_CONFIG = "config_setfit.json"
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
TORCH, ONNX_INT8 = "safetensors", "onnx-int8"  # how a Predictor computes its probabilities

logger = logging.getLogger(__name__)


@dataclass
class ModelSpec:
    """One model the app serves: a Hub repo id (optionally pinned to a revision) or a local folder."""

    source: str
    revision: str | None = None
    trust_pickle: bool = False  # only for repos whose owner you trust: model_head.pkl runs code when loaded

    @property
    def name(self) -> str:
        """The repo id, or the folder's name: a visitor learns nothing from a path on the serving machine. A branch
        or tag shows; a commit sha (a deployed Space pins every model to one) would only be noise."""
        if self.revision is None or COMMIT_SHA.fullmatch(self.revision):
            return readable_name(self.source)
        return f"{readable_name(self.source)}@{self.revision}"


def readable_name(source: str) -> str:
    """A Hub repo id as it is; a local folder (or the absolute path another machine trained from) by its name."""
    if os.path.isabs(source) or os.path.isdir(source):
        return os.path.basename(os.path.normpath(os.path.abspath(source)))
    return source


# How a multi-label prediction's labels are joined into one string: in `Prediction.label` and the app's batch CSVs.
LABEL_SEPARATOR = ";"


@dataclass
class Prediction:
    label: str  # multi-label: the labels joined by LABEL_SEPARATOR, "" when none reaches the threshold
    scores: dict[str, float]
    labels: list[str] = field(default_factory=list)  # every label predicted: one, or (multi-label) any number


@dataclass
class Predictor:
    """Classifies texts with one model. `info` is the model's results.json (empty if it has none)."""

    name: str
    kind: str  # "transformers" or "setfit"
    labels: list[str]
    folder: str
    info: dict = field(default_factory=dict)
    _probabilities: object = field(default=None, repr=False)
    backend: str = TORCH  # TORCH, or ONNX_INT8 when the int8 ONNX files serve it

    @property
    def threshold(self) -> float | None:
        """A multi-label model's decision threshold, from its results.json; None for one label per text."""
        if self.info.get("problem_type") != MULTI_LABEL:
            return None
        return self.info.get("threshold") or 0.5

    def predict(self, texts: list[str], batch_size: int = 32) -> list[Prediction]:
        if not texts:
            return []
        # Batches of texts of similar length pad less; the rows go back to the input order afterwards.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        by_length = [texts[i] for i in order]
        probabilities = np.concatenate(
            [self._probabilities(by_length[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        )[np.argsort(order)]
        threshold = self.threshold
        predictions = []
        for row in probabilities:
            if threshold is None:
                labels = [self.labels[int(row.argmax())]]
            else:  # every label whose own (sigmoid) probability reaches the threshold
                labels = [label for label, p in zip(self.labels, row, strict=True) if p >= threshold]
            scores = {label: float(p) for label, p in zip(self.labels, row, strict=True)}
            predictions.append(Prediction(LABEL_SEPARATOR.join(labels), scores, labels))
        return predictions

    def timed_predict(self, texts: list[str]) -> tuple[list[Prediction], float]:
        """Predictions and the wall time they took, in milliseconds."""
        start = time.perf_counter()
        predictions = self.predict(texts)
        return predictions, (time.perf_counter() - start) * 1000


@dataclass
class FillMasker:
    """A masked-LM encoder that proposes the likeliest tokens where a sentence says [MASK]."""

    name: str
    folder: str
    _fill: object = field(default=None, repr=False)

    def fill(self, text: str, top_k: int = 5) -> list[tuple[str, float]]:
        """(token, probability) of the `top_k` likeliest tokens where `text` says [MASK] (once)."""
        return self._fill(text, top_k)


def fill_mask_encoders(info: dict, folder: str | None = None) -> tuple[str, str] | None:
    """The base and the adapted encoder that an MLM-adapted classifier's results.json names; None for other models.

    Each is a Hub repo id, or a local folder's name (results.json never holds a path of the training machine);
    the adapted encoder saved beside a local model's files (`folder`) is found there.
    """
    adapted = info.get("method_details", {}).get("adapted_encoder")
    if info.get("method") != "mlm_then_classify" or not adapted:
        return None
    if folder and os.path.isdir(os.path.join(folder, adapted)):
        adapted = os.path.join(folder, adapted)
    return info["base_model"], adapted


def load_fill_mask(spec: ModelSpec, token: str | bool | None = None) -> FillMasker:
    """Download (if needed) and load a masked-LM encoder with the same safe files as a classifier."""
    folder = _local_folder(spec, token)
    tokenizer = load_pretrained(AutoTokenizer, folder)
    model = load_pretrained(AutoModelForMaskedLM, folder).eval()
    fill_mask = pipeline("fill-mask", model=model, tokenizer=tokenizer, device=_device())
    limit = longest_input(tokenizer, model.config)

    def fill(text: str, top_k: int) -> list[tuple[str, float]]:
        text = text.replace("[MASK]", tokenizer.mask_token, 1)
        tokens = len(tokenizer(text)["input_ids"])
        if tokens > limit:  # the pipeline does not cut a text (it could cut the mask off); the model would fail
            raise InputError(f"the sentence is {tokens} tokens long; {spec.name} takes at most {limit}")
        candidates = fill_mask(text, top_k=top_k)
        return [(c["token_str"], c["score"]) for c in candidates]

    return FillMasker(spec.name, folder, fill)


def load_predictor(spec: ModelSpec, token: str | bool | None = None) -> Predictor:
    """Download (if needed) and load one model. `token=False` sends no token at all, for repos a visitor named.

    Any failure (a bad id, a missing repo, a model of another kind) is one InputError naming the model.
    """
    folder = _local_folder(spec, token)
    if not os.path.exists(os.path.join(folder, "config.json")):
        raise InputError(f"{spec.name} holds no model: there is no config.json in it")
    info = _read_json(os.path.join(folder, RESULTS_FILE)) or {}
    session = _int8_session(folder, spec)
    if os.path.exists(os.path.join(folder, SETFIT_CONFIG)):
        labels, probabilities = _setfit(folder, spec, session)
        return Predictor(spec.name, "setfit", labels, folder, info, probabilities, _backend(session))
    labels, probabilities = _transformers(folder, session)
    return Predictor(spec.name, "transformers", labels, folder, info, probabilities, _backend(session))


def files_to_load(filenames: list[str], trust_pickle: bool = False) -> list[str]:
    """Which of a repo's files loading it downloads: what a Space preloads for it, and nothing else."""
    return list(filter_repo_objects(filenames, allow_patterns=_patterns(trust_pickle)))


def _patterns(trust_pickle: bool) -> list[str]:
    return SAFE_FILES + ([PICKLED_HEAD] if trust_pickle else [])


def _local_folder(spec: ModelSpec, token: str | bool | None) -> str:
    if os.path.isdir(spec.source):
        return spec.source
    try:
        validate_repo_id(spec.source)
    except HFValidationError as err:
        raise InputError(f"{spec.source!r} is neither a local folder nor a valid Hub repo id") from err
    try:
        return snapshot_download(
            spec.source, revision=spec.revision, allow_patterns=_patterns(spec.trust_pickle), token=token
        )
    except (HfHubHTTPError, httpx2.TransportError, OSError) as err:
        raise InputError(f"could not download {spec.name}: {err}") from err


def _device() -> str:
    # On ZeroGPU `spaces` makes CUDA look present at start-up and moves the weights when a call gets its GPU.
    return "cuda" if torch.cuda.is_available() else "cpu"


def _int8_session(folder: str, spec: ModelSpec) -> onnxruntime.InferenceSession | None:
    """An ONNX Runtime session on the folder's int8 file when it matches the weights and the model runs on CPU."""
    if _device() != "cpu" or (spec.trust_pickle and os.path.exists(os.path.join(folder, PICKLED_HEAD))):
        return None  # a GPU runs the weights as they are; setfit's own loader serves a trusted pickled head
    path = matching_int8(folder)
    if path is None:
        if os.path.exists(os.path.join(folder, INT8_FILE)):
            logger.warning("%s: %s is damaged or made from other weights; serving safetensors", spec.name, INT8_FILE)
        return None
    return onnx_session(path)


def onnx_session(path: str) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session on CPU with as many threads as torch has, whose idle threads sleep.

    Spinning threads (ONNX Runtime's default) take the CPUs that a serving process shares with the app, the other
    models and other tenants: on 2 busy cores, /compare's p50 went from 124 ms to 26 ms without them.
    """
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # one setting for both runtimes: torch's
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _backend(session: onnxruntime.InferenceSession | None) -> str:
    return TORCH if session is None else ONNX_INT8


def _run(session: onnxruntime.InferenceSession, batch) -> np.ndarray:
    """The session's one output for a tokenized batch (numpy or torch tensors), as float32."""
    feed = {i.name: np.asarray(batch[i.name], dtype=np.int64) for i in session.get_inputs()}
    return session.run(None, feed)[0].astype(np.float32)


def _transformers(folder: str, session: onnxruntime.InferenceSession | None = None):
    tokenizer = load_pretrained(AutoTokenizer, folder)
    if session is not None:
        config = load_pretrained(AutoConfig, folder)
        labels = [config.id2label[i] for i in range(config.num_labels)]
        limit = longest_input(tokenizer, config)

        def int8_probabilities(texts: list[str]) -> np.ndarray:
            batch = tokenizer(texts, truncation=True, max_length=limit, padding=True, return_tensors="np")
            logits = _run(session, batch)
            return _scores(torch.from_numpy(logits), config).numpy()

        return labels, int8_probabilities
    model = load_pretrained(AutoModelForSequenceClassification, folder).eval()
    device = _device()
    model.to(device)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    limit = longest_input(tokenizer, model.config)

    @torch.inference_mode()
    def probabilities(texts: list[str]) -> np.ndarray:
        batch = tokenizer(texts, truncation=True, max_length=limit, padding=True, return_tensors="pt").to(device)
        return _scores(model(**batch).logits.float(), model.config).cpu().numpy()

    return labels, probabilities


def _scores(logits: torch.Tensor, config) -> torch.Tensor:
    """Probabilities from a classifier's logits: a multi-label model scores each label on its own (a sigmoid), as
    transformers' pipeline does; one label per text: a softmax over them."""
    return torch.sigmoid(logits) if config.problem_type == MULTI_LABEL else torch.softmax(logits, dim=-1)


def _setfit(folder: str, spec: ModelSpec, session: onnxruntime.InferenceSession | None = None):
    config = _read_json(os.path.join(folder, SETFIT_CONFIG)) or {}
    if spec.trust_pickle and os.path.exists(os.path.join(folder, PICKLED_HEAD)):
        from setfit import SetFitModel

        model = SetFitModel.from_pretrained(folder)
        labels = model.labels or [str(c) for c in range(len(model.predict_proba(["x"])))]
        return labels, lambda texts: np.asarray(model.predict_proba(texts, as_numpy=True))
    if not os.path.exists(os.path.join(folder, HEAD_FILE)):
        if not os.path.exists(os.path.join(folder, PICKLED_HEAD)):
            raise InputError(f"{spec.name} is a SetFit model without its head ({HEAD_FILE})")
        raise InputError(
            f"{spec.name} is a SetFit model with only a pickled head; list it as trusted (trust_pickle) to load it"
        )
    body = load_sentence_transformer(folder)
    head = PortableHead.load(folder)
    labels = config.get("labels") or [str(c) for c in head.classes]
    normalize = bool(config.get("normalize_embeddings", False))

    def embed(texts: list[str]) -> np.ndarray:
        if session is None:
            return body.encode(texts, normalize_embeddings=normalize, convert_to_numpy=True)
        embeddings = _run(session, body.preprocess(texts))  # the body's own tokenization: same truncation
        if normalize:
            embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        return embeddings

    def probabilities(texts: list[str]) -> np.ndarray:
        embeddings = embed(texts)
        aligned = np.zeros((len(texts), len(labels)))
        aligned[:, head.classes] = head.predict_proba(embeddings)  # the head's columns follow its class ids
        return aligned

    return labels, probabilities


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
