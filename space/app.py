"""Compare text classifiers side by side: predictions and confidences, a leaderboard from their model cards and
results, batch evaluation of a CSV, and fill-mask for MLM-adapted encoders.

    MODEL_IDS="org/a,org/b@v2,./outputs/c" python space/app.py     # repo ids (optionally @revision) or folders
    python space/app.py                                          # models from space/models.yaml

GRADIO_SERVER_NAME and GRADIO_SERVER_PORT are honoured. On Hugging Face Spaces the app runs on CPU hardware; with
ZeroGPU (the `spaces` package) inference runs under `spaces.GPU`.
"""

import csv
import html
import os
import tempfile
from dataclasses import dataclass

import gradio as gr
import matplotlib.pyplot as plt
import pandas as pd
import yaml

from shared.errors import CliError
from shared.inference import ModelSpec, Predictor, load_predictor
from shared.metrics import classification_metrics

try:  # ZeroGPU Spaces lend a GPU per call to functions wrapped in spaces.GPU
    import spaces

    on_gpu = spaces.GPU
except ImportError:

    def on_gpu(fn):
        return fn


HERE = os.path.dirname(os.path.abspath(__file__))
MODELS_FILE = os.path.join(HERE, "models.yaml")
# Limits enforced on the server, whatever the browser or an API client sends.
MAX_TEXT_CHARS = 2000
MAX_BATCH_ROWS = 500
MAX_UPLOAD = "1mb"
CONCURRENCY = 2  # inference calls running at once; the rest wait in the queue
MAX_QUEUE = 32
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


def read_model_specs(model_ids: str | None = None, models_file: str = MODELS_FILE) -> list[ModelSpec]:
    """MODEL_IDS ("id[@revision],...") when set, else the `models:` list of models.yaml."""
    if model_ids:
        specs = []
        for entry in filter(None, (e.strip() for e in model_ids.split(","))):
            source, _, revision = entry.partition("@")
            specs.append(ModelSpec(source, revision or None))
        return specs
    with open(models_file) as f:
        entries = (yaml.safe_load(f) or {}).get("models") or []
    return [
        ModelSpec(e["id"], e.get("revision"), bool(e.get("trust_pickle", False)))
        if isinstance(e, dict)
        else ModelSpec(str(e))
        for e in entries
    ]


def load_models(specs: list[ModelSpec]) -> list[Predictor | BrokenModel]:
    """Load every model once, up front; one that fails becomes a BrokenModel instead of stopping the app."""
    models = []
    for spec in specs:
        try:
            models.append(load_predictor(spec))
        except (CliError, OSError, ValueError) as err:
            models.append(BrokenModel(spec.name, str(err)))
    return models


def check_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise gr.Error("Type a text to classify.")
    if len(text) > MAX_TEXT_CHARS:
        raise gr.Error(f"The text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}.")
    return text


def compare(models: list, text: str) -> list[dict]:
    """Each model's label, scores and latency for one text; a model that fails reports its error instead."""
    text = check_text(text)
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
            {"model": model.name, "label": prediction.label, "scores": prediction.scores, "latency_ms": latency_ms}
        )
    return answers


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
                "base model": info.get("base_model", "?"),
                "training examples": info.get("num_train_samples"),
                "accuracy": _rounded(metrics.get("accuracy")),
                "F1": _rounded(metrics.get("f1", metrics.get("f1_macro"))),
                "training time (s)": _rounded(info.get("train_runtime_s"), 1),
                "trainable params": info.get("trainable_params"),
            }
        )
    return rows


def leaderboard_plot(rows: list[dict]):
    figure, axes = plt.subplots(figsize=(6, 4))
    for row in rows:
        if row["F1"] is not None and row["training time (s)"]:
            axes.scatter(row["training time (s)"], row["F1"], s=60)
            axes.annotate(f"{row['method']}\n{row['model']}", (row["training time (s)"], row["F1"]), fontsize=7)
    axes.set_xscale("log")
    axes.set_xlabel("training time (s, log scale)")
    axes.set_ylabel("F1")
    axes.set_title("F1 against training time")
    figure.tight_layout()
    return figure


def read_batch(path: str) -> tuple[list[str], list[str] | None]:
    """Texts (and labels, if the file has a `label` column) of an uploaded CSV with a `text` column."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
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
    return texts, labels


def evaluate_batch(models: list, path: str):
    """Every model's predictions on the file; with labels, accuracy and F1 per model and confusion matrices."""
    texts, labels = read_batch(path)
    table = {"text": texts} | ({"label": labels} if labels else {})
    scores, matrices = [], []
    for model in models:
        if isinstance(model, BrokenModel):
            scores.append({"model": model.name, "error": model.error})
            continue
        predictions = [p.label for p in model.predict(texts)]
        table[model.name] = predictions
        if labels:
            metrics = _label_metrics(labels, predictions, model.labels)
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


def mlm_pairs(models: list) -> dict[str, tuple[str, str]]:
    """Base and adapted encoder of each MLM-adapted classifier, by the classifier's name."""
    pairs = {}
    for model in models:
        info = model.info or {}
        adapted = info.get("method_details", {}).get("adapted_encoder")
        if info.get("method") == "mlm_then_classify" and adapted:
            pairs[model.name] = (info["base_model"], adapted)
    return pairs


def build_demo(models: list) -> gr.Blocks:
    """The app's UI and API for already loaded models; nothing is loaded or launched here."""
    rows = leaderboard(models)
    pairs = mlm_pairs(models)
    fill_mask_pipelines = {}

    @on_gpu
    def compare_for_api(text: str) -> list[dict]:
        return compare(models, text)

    def compare_for_ui(text: str):
        answers = compare_for_api(text)
        outputs = [agreement(answers)]
        for answer in answers:
            if "error" in answer:
                outputs += [None, f"⚠️ could not answer: {html.escape(answer['error'][:300])}"]
            else:
                outputs += [answer["scores"], f"{answer['latency_ms']:.0f} ms"]
        return outputs

    @on_gpu
    def batch_for_api(path: str):
        if path is None:
            raise gr.Error("Upload a CSV file first.")
        return evaluate_batch(models, path)

    def leaderboard_for_api() -> list[dict]:
        return rows

    def fill_mask(classifier: str, text: str):
        text = check_text(text)
        if "[MASK]" not in text:
            raise gr.Error("Put [MASK] where a word is missing.")
        tables = []
        for encoder in pairs[classifier]:
            if encoder not in fill_mask_pipelines:
                from transformers import pipeline

                fill_mask_pipelines[encoder] = pipeline(
                    "fill-mask", model=encoder, model_kwargs={"use_safetensors": True}, trust_remote_code=False
                )
            fill = fill_mask_pipelines[encoder]
            candidates = fill(text.replace("[MASK]", fill.tokenizer.mask_token, 1))
            tables.append(pd.DataFrame([{"token": c["token_str"], "score": round(c["score"], 4)} for c in candidates]))
        return tables

    with gr.Blocks(title="Compare text classifiers") as demo:
        gr.Markdown("# Compare text classifiers\nThe same text through every model: label, confidence and latency.")
        with gr.Tab("Compare"):
            text = gr.Textbox(label="Text", lines=3, max_length=MAX_TEXT_CHARS, placeholder="Type a sentence")
            run = gr.Button("Compare", variant="primary")
            agree = gr.Markdown(elem_id="agreement")
            panels = []
            with gr.Row(equal_height=True):
                for i, model in enumerate(models):
                    with gr.Column(min_width=220):
                        gr.Markdown(f"**{html.escape(model.name)}**")
                        panels.append(gr.Label(label="confidence", num_top_classes=5, elem_id=f"label-{i}"))
                        panels.append(gr.Markdown(elem_id=f"latency-{i}"))
            gr.Examples(EXAMPLES, inputs=text)
            run.click(compare_for_ui, text, [agree, *panels], api_visibility="private")
            text.submit(compare_for_ui, text, [agree, *panels], api_visibility="private")
        with gr.Tab("Leaderboard"):
            gr.Dataframe(pd.DataFrame(rows), interactive=False)
            gr.Plot(leaderboard_plot(rows))
        with gr.Tab("Batch"):
            gr.Markdown(
                f"A CSV with a `text` column and optionally `label`, at most {MAX_BATCH_ROWS} rows and {MAX_UPLOAD}."
            )
            upload = gr.File(label="CSV file", file_types=[".csv"], type="filepath")
            evaluate = gr.Button("Evaluate", variant="primary")
            predictions = gr.Dataframe(label="predictions", interactive=False)
            download = gr.File(label="download predictions")
            scores = gr.Dataframe(label="accuracy and F1 per model", interactive=False)
            confusion = gr.Plot(label="confusion matrices")
            evaluate.click(batch_for_api, upload, [predictions, download, scores, confusion], api_name="batch")
        if pairs:
            with gr.Tab("Fill-mask"):
                gr.Markdown("The base encoder and the domain-adapted one on the same masked sentence.")
                classifier = gr.Dropdown(list(pairs), value=next(iter(pairs)), label="MLM-adapted model")
                masked = gr.Textbox(value="What a horrible [MASK]!", label="Sentence with [MASK]")
                go = gr.Button("Fill the mask")
                with gr.Row():
                    base_table, adapted_table = gr.Dataframe(label="base"), gr.Dataframe(label="adapted")
                go.click(fill_mask, [classifier, masked], [base_table, adapted_table], api_name="fill_mask")
        gr.api(compare_for_api, api_name="compare")
        gr.api(leaderboard_for_api, api_name="leaderboard")
    return demo


def _rounded(value, digits: int = 4):
    return None if value is None else round(value, digits)


def launch(demo: gr.Blocks, **kwargs):
    """Queue with a concurrency limit and a bounded size; uploads over MAX_UPLOAD are refused by the server."""
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)
    return demo.launch(max_file_size=MAX_UPLOAD, **kwargs)


if __name__ == "__main__":
    launch(build_demo(load_models(read_model_specs(os.environ.get("MODEL_IDS")))))
