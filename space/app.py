"""Compare text classifiers side by side: predictions and confidences, a leaderboard from their model cards and
results, batch evaluation of a CSV, and fill-mask for MLM-adapted encoders.

    MODEL_IDS="org/a,org/b@v2,./outputs/c" python space/app.py     # repo ids (optionally @revision) or folders
    python space/app.py                                          # models from space/models.yaml
    ENCODER_IDS=/path/to/base-encoder MODEL_IDS=./outputs/mlm python space/app.py   # a local base for fill-mask

GRADIO_SERVER_NAME and GRADIO_SERVER_PORT are honoured. Every model is loaded and run once at start-up, so the
first visitor waits no longer than the next. On a ZeroGPU Space (hardware "ZeroGPU", the `spaces` package) each
inference call borrows a GPU under `spaces.GPU` for as long as its work needs; elsewhere it runs where the models
were loaded: on CUDA when there is one, else on the CPU.
"""

# ZeroGPU refuses to start once CUDA is initialised, so `spaces` is imported before anything that imports torch.
try:
    import spaces
except ImportError:  # not a ZeroGPU Space
    spaces = None

import csv
import html
import logging
import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field

import gradio as gr
import matplotlib.pyplot as plt
import pandas as pd
import yaml
from matplotlib.ticker import LogFormatter

from shared.errors import CliError
from shared.inference import (
    LABEL_SEPARATOR,
    FillMasker,
    ModelSpec,
    Predictor,
    fill_mask_encoders,
    load_fill_mask,
    load_predictor,
    readable_name,
)
from shared.metrics import classification_metrics, multi_label_metrics

logger = logging.getLogger(__name__)
HERE = os.path.dirname(os.path.abspath(__file__))
MODELS_FILE = os.path.join(HERE, "models.yaml")
# Limits enforced on the server, whatever the browser or an API client sends.
MAX_TEXT_CHARS = 2000
MAX_BATCH_ROWS = 500
MAX_UPLOAD = "1mb"
# Compare, batch and fill-mask share one queue group: at most this many of them run models at once, in total.
INFERENCE = {"concurrency_id": "inference", "concurrency_limit": 2}
MAX_QUEUE = 32
# ZeroGPU stops a call that outlives the GPU time it asked for (60 s unless told), and serves shorter asks
# sooner, so each call asks for what its work needs: the cost of attaching a GPU, then a rate per text and model
# that is generous for a base-size encoder on texts of MAX_TEXT_CHARS (500 rows x 4 models: 110 s).
GPU_ATTACH_S = 10
GPU_S_PER_TEXT = 0.05
NO_LABEL = "(none)"  # a multi-label model's answer when no label reaches its threshold
ON_ZERO_GPU = spaces is not None and spaces.config.Config.zero_gpu
EXAMPLES = [
    "What a horrible movie!",
    "A warm, funny and beautifully acted film.",
    "The plot was predictable but the cast made it worth watching.",
]


@dataclass
class BrokenModel:
    """A model that failed to load: its panel shows the error, the other models keep answering."""

    name: str
    error: str
    info: dict | None = None


# A classifier trained from a local folder names it by its folder name only: ENCODER_IDS must say where it is.
LOCAL_BASE = (
    "the base encoder {} was a local folder of the training machine: publish it, or name its folder in ENCODER_IDS"
)


@dataclass
class Models:
    """Everything the app serves, loaded at start-up: the classifiers, and by classifier name the base and adapted
    encoders of each MLM-adapted one (for fill-mask)."""

    classifiers: list[Predictor | BrokenModel]
    fill_mask: dict[str, tuple[FillMasker | BrokenModel, FillMasker | BrokenModel]] = field(default_factory=dict)


def read_model_specs(model_ids: str | None = None, models_file: str = MODELS_FILE) -> list[ModelSpec]:
    """MODEL_IDS ("id[@revision],...") when set, else the `models:` list of models.yaml."""
    if model_ids:
        specs = []
        for entry in filter(None, (e.strip() for e in model_ids.split(","))):
            if os.path.isdir(entry):  # a folder, even one whose name holds an '@'
                specs.append(ModelSpec(entry))
                continue
            source, _, revision = entry.partition("@")
            specs.append(ModelSpec(source, revision or None))
        return specs
    return _read_models_file(models_file, "models")


def read_encoder_specs(models_file: str = MODELS_FILE) -> list[ModelSpec]:
    """The `encoders:` list of models.yaml: the revisions the fill-mask encoders are pinned to (deploy writes it)."""
    return _read_models_file(models_file, "encoders")


def _read_models_file(models_file: str, key: str) -> list[ModelSpec]:
    with open(models_file) as f:
        entries = (yaml.safe_load(f) or {}).get(key) or []
    return [
        ModelSpec(e["id"], e.get("revision"), bool(e.get("trust_pickle", False)))
        if isinstance(e, dict)
        else ModelSpec(str(e))
        for e in entries
    ]


def load_models(specs: list[ModelSpec], encoder_specs: list[ModelSpec] = ()) -> Models:
    """Load every model once, up front, and run it once; one that fails becomes a BrokenModel instead of stopping
    the app. An encoder in `encoder_specs` loads at the revision listed there."""
    classifiers = [_load(load_predictor, spec, lambda model: model.predict([EXAMPLES[0]])) for spec in _once(specs)]
    _name_apart(classifiers)
    # By source, and by folder name: how results.json names an encoder that was a local folder.
    pinned = {key: spec for spec in encoder_specs for key in (spec.source, readable_name(spec.source))}
    encoders, fill_mask = {}, {}
    for model in classifiers:
        pair = fill_mask_encoders(model.info or {}, getattr(model, "folder", None))
        if pair is None:
            continue
        for source in pair:
            if source in encoders:
                continue
            spec = pinned.get(source, ModelSpec(source))
            if (
                source == model.info["base_model"]
                and not model.info.get("base_model_on_hub", True)
                and source not in pinned
            ):
                encoders[source] = BrokenModel(source, LOCAL_BASE.format(source))
            else:
                spec = pinned.get(source, ModelSpec(source))
                encoders[source] = _load(load_fill_mask, spec, lambda encoder: encoder.fill("What a [MASK] movie!"))
        fill_mask[model.name] = (encoders[pair[0]], encoders[pair[1]])
    return Models(classifiers, fill_mask)


def _load(loader, spec: ModelSpec, first_call):
    """The model, already run once by `first_call`: the first call pays for lazy set-up (kernels, allocators,
    caches), which would otherwise make the first visitor's request the slowest. A failure of either makes it a
    BrokenModel that reports the error while the other models answer."""
    try:
        model = loader(spec)
    except CliError as err:
        return BrokenModel(spec.name, str(err))
    except Exception as err:  # whatever is wrong with one model's files must not keep the app from starting
        return BrokenModel(spec.name, f"{type(err).__name__}: {err}")
    if ON_ZERO_GPU:  # each call runs in a fresh GPU worker there: warming this process would not help it
        return model
    try:
        first_call(model)
    except Exception as err:  # as in compare: this model's failure must not take the others down
        return BrokenModel(spec.name, f"{type(err).__name__}: {err}", getattr(model, "info", None))
    return model


def _once(specs: list[ModelSpec]) -> list[ModelSpec]:
    """The specs without repeats: a model listed twice is served once."""
    unique = []
    for spec in specs:
        if spec in unique:
            logger.warning("%s is listed more than once; it is served once", spec.name)
        else:
            unique.append(spec)
    return unique


def _name_apart(models: list) -> None:
    """Models are named by repo id or folder name, and their names key the batch table: two folders of the same name
    (runs/a/model, runs/b/model) become `model` and `model (2)`."""
    seen = Counter()
    for model in models:
        seen[model.name] += 1
        if seen[model.name] > 1:
            model.name = f"{model.name} ({seen[model.name]})"


def on_gpu(duration):
    """spaces.GPU asking for `duration(*args)` seconds per call; without the `spaces` package, the function itself
    (spaces.GPU is a no-op too on hardware other than ZeroGPU)."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def gpu_seconds(num_texts: int, num_models: int) -> int:
    return math.ceil(GPU_ATTACH_S + GPU_S_PER_TEXT * num_texts * num_models)


def check_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise gr.Error("Type a text to classify.")
    if len(text) > MAX_TEXT_CHARS:
        raise gr.Error(f"The text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}.")
    return text


def compare(models: list, text: str) -> list[dict]:
    """Each model's label, scores and latency for one text; a model that fails reports its error instead."""
    answers = []
    for model in models:
        if isinstance(model, BrokenModel):
            answers.append({"model": model.name, "error": model.error})
            continue
        try:
            [prediction], latency_ms = model.timed_predict([text])
        except Exception as err:  # one model's failure must not take the others down
            answers.append({"model": model.name, "error": f"{type(err).__name__}: {err}"})
            continue
        answers.append(
            {
                "model": model.name,
                "label": prediction.label or NO_LABEL,  # multi-label: every label over the threshold, joined
                "labels": prediction.labels,
                "scores": prediction.scores,  # multi-label: each label's own probability; they need not sum to 1
                "threshold": model.threshold,  # None: one label per text
                "latency_ms": latency_ms,
            }
        )
    return answers


def panel_note(answer: dict) -> str:
    """The line under a model's scores: its latency, and for a multi-label model every label over its threshold
    (gr.Label's headline shows only the likeliest one)."""
    latency = f"{answer['latency_ms']:.0f} ms"
    if answer["threshold"] is None:
        return latency
    return f"**{html.escape(answer['label'])}** (every label ≥ {answer['threshold']}) · {latency}"


def agreement(answers: list[dict]) -> str:
    labels = {a["label"] for a in answers if "label" in a}
    answered = sum("label" in a for a in answers)
    if answered < 2:
        return f"{answered} model answered." if answered == 1 else "No model answered."
    if len(labels) == 1:
        return f"All {answered} models agree: **{html.escape(labels.pop())}**."
    return f"The models disagree: {', '.join(f'**{html.escape(label)}**' for label in sorted(labels))}."


def leaderboard(models: list) -> list[dict]:
    """One row per model from its results.json: method, base model, data, scores and cost."""
    rows = []
    for model in models:
        info = model.info or {}
        metrics = info.get("metrics", {})
        rows.append(
            {
                "model": model.name,
                "method": info.get("method", "?"),
                "base model": readable_name(info.get("base_model", "?")),
                "training examples": info.get("num_train_samples"),
                "accuracy": _rounded(metrics.get("accuracy")),
                "F1": _rounded(metrics.get("f1", metrics.get("f1_macro"))),
                "training time (s)": _rounded(info.get("train_runtime_s"), 1),
                "trainable params": info.get("trainable_params"),
            }
        )
    return rows


def leaderboard_plot(rows: list[dict]):
    """F1 against training time, one marker per model, named in a legend under the axes: labels written beside
    the points would overlap as soon as two models score and train alike."""
    plotted = [row for row in rows if row["F1"] is not None and row["training time (s)"]]
    figure, axes = plt.subplots(figsize=(7, 3.8 + 0.2 * len(plotted)), layout="constrained")
    colors, markers = plt.get_cmap("tab10").colors, "osD^vP*Xph"
    for i, row in enumerate(plotted):
        label = f"{row['model']}  ({row['method']})"
        color, marker = colors[i % len(colors)], markers[i % len(markers)]
        axes.scatter(row["training time (s)"], row["F1"], s=70, color=color, marker=marker, label=label)
    axes.set_xscale("log")
    # Plain numbers (20, 30, 100) rather than 2x10^1; the minor ones thin out when the times span decades.
    axes.xaxis.set_major_formatter(LogFormatter())
    axes.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    axes.set_xlabel("training time (s, log scale)")
    axes.set_ylabel("F1")
    axes.set_title("F1 against training time")
    if plotted:
        figure.legend(loc="outside lower center", fontsize=8, frameon=False)
    return figure


def read_batch(path: str) -> tuple[list[str], list[str] | None]:
    """Texts (and labels, if the file has a `label` column) of an uploaded CSV with a `text` column. For
    multi-label models a label cell holds a text's labels joined by LABEL_SEPARATOR (`praise;acting`)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets' "CSV UTF-8" starts with a BOM
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as err:
        raise gr.Error(f"Could not read the file as UTF-8 CSV: {err}") from err
    if not rows or "text" not in rows[0]:
        raise gr.Error("The CSV needs a header row with a `text` column (and optionally `label`).")
    if len(rows) > MAX_BATCH_ROWS:
        raise gr.Error(f"The file has {len(rows)} rows; the limit is {MAX_BATCH_ROWS}.")
    texts = [(row["text"] or "").strip() for row in rows]
    empty = [i + 2 for i, text in enumerate(texts) if not text]  # +2: header line, 1-based lines
    if empty:
        raise gr.Error(f"Empty text on line(s) {', '.join(map(str, empty[:10]))}.")
    too_long = [i + 2 for i, text in enumerate(texts) if len(text) > MAX_TEXT_CHARS]
    if too_long:
        raise gr.Error(
            f"Text longer than {MAX_TEXT_CHARS} characters on line(s) {', '.join(map(str, too_long[:10]))}."
        )
    labels = [(row.get("label") or "").strip() for row in rows] if "label" in rows[0] else None
    unlabeled = [i + 2 for i, label in enumerate(labels or []) if not label]
    if unlabeled:
        raise gr.Error(f"Empty label on line(s) {', '.join(map(str, unlabeled[:10]))}; fill it in or drop the column.")
    return texts, labels


def batch_predictions(models: list, texts: list[str]) -> dict[str, list[str] | str]:
    """Each loaded model's labels for the texts by model name, or the error that stopped it: the inference of a
    batch, nothing more. One model's failure must not take the others' answers down."""
    predicted = {}
    for model in models:
        if isinstance(model, BrokenModel):
            continue
        try:
            predicted[model.name] = [p.label for p in model.predict(texts)]
        except Exception as err:
            predicted[model.name] = f"{type(err).__name__}: {err}"
    return predicted


def evaluate_batch(models: list, texts: list[str], labels: list[str] | None, predicted: dict[str, list[str] | str]):
    """The batch tab from predictions already made (batch_predictions): a table and its CSV; with labels, accuracy
    and F1 per model and confusion matrices. A model that failed has its error in the scores instead."""
    answered = {name: answer for name, answer in predicted.items() if not isinstance(answer, str)}
    table = {"text": texts} | ({"label": labels} if labels else {}) | answered
    scores, matrices = [], []
    for model in models:
        if isinstance(model, BrokenModel):
            scores.append({"model": model.name, "error": model.error})
        elif model.name not in answered:
            scores.append({"model": model.name, "error": predicted[model.name]})
        elif labels and model.threshold is not None:  # multi-label: subset accuracy, macro and micro F1
            metrics = _label_set_metrics(labels, answered[model.name], model.labels)
            scores.append({"model": model.name, **metrics})
        elif labels:
            metrics = _label_metrics(labels, answered[model.name], model.labels)
            scores.append({"model": model.name, "accuracy": metrics["accuracy"], "F1": metrics["f1"]})
            matrices.append((model.name, model.labels, metrics["confusion_matrix"]))
    predictions = pd.DataFrame(table)
    download = os.path.join(tempfile.mkdtemp(prefix="batch-"), "predictions.csv")
    predictions.to_csv(download, index=False)
    return predictions, download, pd.DataFrame(scores), _confusion_plot(matrices) if matrices else None


def _label_metrics(labels: list[str], predictions: list[str], names: list[str]) -> dict:
    """Metrics against the file's labels. A label the model does not know becomes "(other)": always a miss."""
    if any(label not in names for label in labels):
        names = [*names, "(other)"]
    ids = {name: i for i, name in enumerate(names)}
    metrics = classification_metrics(
        [ids.get(label, len(names) - 1) for label in labels], [ids[p] for p in predictions], names
    )
    f1 = metrics.get("f1", metrics["f1_macro"])  # binary F1 for two labels, as in results.json; else macro
    return {
        "accuracy": round(metrics["accuracy"], 4),
        "f1": round(f1, 4),
        "confusion_matrix": metrics["confusion_matrix"],
    }


def _label_set_metrics(labels: list[str], predictions: list[str], names: list[str]) -> dict:
    """Multi-label metrics against the file's label sets (LABEL_SEPARATOR-joined). A label the model does not know
    becomes "(other)", a label it can never predict."""
    true_sets, predicted_sets = (
        [{label.strip() for label in cell.split(LABEL_SEPARATOR) if label.strip()} for cell in column]
        for column in (labels, predictions)
    )
    if any(set(true) - set(names) for true in true_sets):
        names = [*names, "(other)"]
    columns = {name: i for i, name in enumerate(names)}

    def matrix(label_sets):
        rows = [[0] * len(names) for _ in label_sets]
        for row, label_set in zip(rows, label_sets, strict=True):
            for label in label_set:
                row[columns.get(label, len(names) - 1)] = 1
        return rows

    metrics = multi_label_metrics(matrix(true_sets), matrix(predicted_sets), names)
    return {
        "accuracy": round(metrics["accuracy"], 4),
        "F1": round(metrics["f1_macro"], 4),
        "F1 (micro)": round(metrics["f1_micro"], 4),
    }


def _confusion_plot(matrices: list):
    figure, axes = plt.subplots(1, len(matrices), figsize=(4 * len(matrices), 3.6), squeeze=False)
    for axis, (name, labels, matrix) in zip(axes[0], matrices, strict=True):
        names = labels if len(matrix) == len(labels) else labels + ["(other)"]
        axis.imshow(matrix, cmap="Blues")
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        axis.set_yticks(range(len(names)), names, fontsize=8)
        for (i, j), count in pd.DataFrame(matrix).stack().items():
            axis.text(j, i, str(count), ha="center", va="center")
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
    figure.tight_layout()
    return figure


def build_demo(models: Models) -> gr.Blocks:
    """The app's UI and API for already loaded models; nothing is loaded or launched here.

    Only model calls run under on_gpu; checking the input and building tables and plots stay outside, so a
    ZeroGPU Space holds its GPU for the inference alone.
    """
    classifiers, pairs = models.classifiers, models.fill_mask
    rows = leaderboard(classifiers)

    @on_gpu(duration=lambda text: gpu_seconds(1, len(classifiers)))
    def compare_on_gpu(text: str) -> list[dict]:
        return compare(classifiers, text)

    @on_gpu(duration=lambda texts: gpu_seconds(len(texts), len(classifiers)))
    def predict_batch(texts: list[str]) -> dict[str, list[str]]:
        return batch_predictions(classifiers, texts)

    @on_gpu(duration=lambda classifier, text: gpu_seconds(1, 2))
    def fill_on_gpu(classifier: str, text: str) -> list[list[tuple[str, float]]]:
        return [encoder.fill(text) for encoder in pairs[classifier]]

    def compare_for_api(text: str) -> list[dict]:
        return compare_on_gpu(check_text(text))

    def compare_for_ui(text: str):
        answers = compare_for_api(text)
        outputs = [agreement(answers)]
        for answer in answers:
            if "error" in answer:
                outputs += [None, f"⚠️ could not answer: {html.escape(answer['error'][:300])}"]
            else:
                outputs += [answer["scores"], panel_note(answer)]
        return outputs

    def batch_for_api(path: str):
        if path is None:
            raise gr.Error("Upload a CSV file first.")
        texts, labels = read_batch(path)
        return evaluate_batch(classifiers, texts, labels, predict_batch(texts))

    def leaderboard_for_api() -> list[dict]:
        return rows

    def fill_mask(classifier: str, text: str):
        text = check_text(text)
        if text.count("[MASK]") != 1:
            raise gr.Error("Put [MASK], once, where a word is missing.")
        broken = [encoder for encoder in pairs[classifier] if isinstance(encoder, BrokenModel)]
        if broken:
            raise gr.Error(f"{broken[0].name} could not load: {broken[0].error[:300]}")
        try:
            filled = fill_on_gpu(classifier, text)
        except CliError as err:  # a sentence longer than the encoders take
            raise gr.Error(str(err)) from err
        return [
            pd.DataFrame([{"token": token, "score": round(score, 4)} for token, score in candidates])
            for candidates in filled
        ]

    with gr.Blocks(title="Compare text classifiers") as demo:
        gr.Markdown("# Compare text classifiers\nThe same text through every model: label, confidence and latency.")
        with gr.Tab("Compare"):
            text = gr.Textbox(label="Text", lines=3, max_length=MAX_TEXT_CHARS, placeholder="Type a sentence")
            run = gr.Button("Compare", variant="primary")
            agree = gr.Markdown(elem_id="agreement")
            panels = []
            with gr.Row(equal_height=True):
                for i, model in enumerate(classifiers):
                    with gr.Column(min_width=220):
                        gr.Markdown(f"**{html.escape(model.name)}**")
                        panels.append(gr.Label(label="confidence", num_top_classes=5, elem_id=f"label-{i}"))
                        panels.append(gr.Markdown(elem_id=f"latency-{i}"))
            gr.Examples(EXAMPLES, inputs=text)
            run.click(compare_for_ui, text, [agree, *panels], api_visibility="private", **INFERENCE)
            text.submit(compare_for_ui, text, [agree, *panels], api_visibility="private", **INFERENCE)
        with gr.Tab("Leaderboard"):
            gr.Dataframe(pd.DataFrame(rows), interactive=False)
            gr.Plot(leaderboard_plot(rows), elem_id="leaderboard-plot")
        with gr.Tab("Batch"):
            gr.Markdown(
                f"A CSV with a `text` column and optionally `label`, at most {MAX_BATCH_ROWS} rows and {MAX_UPLOAD}. "
                f"For multi-label models, join a text's labels with `{LABEL_SEPARATOR}` (`praise{LABEL_SEPARATOR}"
                "acting`); they are scored by subset accuracy (every label right), macro F1 and micro F1."
            )
            upload = gr.File(label="CSV file", file_types=[".csv"], type="filepath")
            evaluate = gr.Button("Evaluate", variant="primary")
            predictions = gr.Dataframe(label="predictions", interactive=False)
            download = gr.File(label="download predictions")
            scores = gr.Dataframe(label="accuracy and F1 per model", interactive=False)
            confusion = gr.Plot(label="confusion matrices")
            evaluate.click(
                batch_for_api, upload, [predictions, download, scores, confusion], api_name="batch", **INFERENCE
            )
        if pairs:
            with gr.Tab("Fill-mask"):
                gr.Markdown("The base encoder and the domain-adapted one on the same masked sentence.")
                classifier = gr.Dropdown(list(pairs), value=next(iter(pairs)), label="MLM-adapted model")
                masked = gr.Textbox(value="What a horrible [MASK]!", label="Sentence with [MASK]")
                go = gr.Button("Fill the mask")
                with gr.Row():
                    base_table, adapted_table = gr.Dataframe(label="base"), gr.Dataframe(label="adapted")
                go.click(
                    fill_mask, [classifier, masked], [base_table, adapted_table], api_name="fill_mask", **INFERENCE
                )
        gr.api(compare_for_api, api_name="compare", **INFERENCE)
        gr.api(leaderboard_for_api, api_name="leaderboard")
    return demo


def _rounded(value, digits: int = 4):
    return None if value is None else round(value, digits)


def launch(demo: gr.Blocks, **kwargs):
    """Queue with a bounded size; uploads over MAX_UPLOAD are refused by the server."""
    demo.queue(max_size=MAX_QUEUE)
    return demo.launch(max_file_size=MAX_UPLOAD, **kwargs)


if __name__ == "__main__":
    model_ids = os.environ.get("MODEL_IDS")
    if model_ids:  # ENCODER_IDS: where the fill-mask encoders of the MODEL_IDS are, when they are local folders
        encoder_pins = read_model_specs(os.environ.get("ENCODER_IDS")) if os.environ.get("ENCODER_IDS") else []
    else:
        encoder_pins = read_encoder_specs()  # the pins in models.yaml go with its models
    launch(build_demo(load_models(read_model_specs(model_ids), encoder_pins)))
