"""The model card (README.md): Hub metadata with a model-index, then what a reader needs to trust and use it."""

import os
from dataclasses import dataclass, field

from datasets import Dataset
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from shared.args import DataArguments, ModelArguments
from shared.data import IMBALANCE_SHARE
from shared.metrics import MULTI_LABEL

CARD_FILE = "README.md"
METRIC_NAMES = {"accuracy": "Accuracy", "f1_macro": "F1 (macro)", "f1_micro": "F1 (micro)", "f1": "F1 (binary)"}
WIDGET_LABELS = 5  # the widget offers a text of each label, of this many labels at most


@dataclass
class CardDetails:
    """What a card says beyond results.json: what the flags say of the published model and of a Hub dataset, and
    what a method adds."""

    license: str | None = None  # None: the card has no such key, rather than a guess
    language: list[str] | None = None
    dataset_on_hub: bool = False
    dataset_config: str | None = None
    dataset_revision: str | None = None  # as asked for; None: main on the day it was loaded
    widget_texts: list[str] = field(default_factory=list)
    # The Hub repo the model was trained from when that is not results' base model: an encoder that an earlier
    # phase adapted and published.
    parent_model: str | None = None
    library_sections: str | None = None  # sections of a library's own card (SetFit's) that ours keeps


def card_details(model_args: ModelArguments, data_args: DataArguments, **method_details) -> CardDetails:
    """A run's CardDetails from its flags. A dataset's configuration and revision only when it came from the Hub:
    there they say what was loaded; local files ignore them."""
    on_hub = data_args.train_file is None
    return CardDetails(
        license=model_args.license,
        language=model_args.language,
        dataset_on_hub=on_hub,
        dataset_config=data_args.dataset_config_name if on_hub else None,
        dataset_revision=data_args.dataset_revision if on_hub else None,
        **method_details,
    )


def widget_texts(split: Dataset) -> list[str]:
    """The first text of each label in `split`: the Hub's widget then tries the model on every class, with the
    same texts on every run."""
    first = {}
    for text, labels in zip(split["text"], split["label"], strict=True):
        for label in labels if isinstance(labels, list) else [labels]:
            first.setdefault(label, text)
    return [first[label] for label in sorted(first)][:WIDGET_LABELS]


def write_model_card(
    output_dir: str,
    results: dict,
    *,
    repo_id: str,
    method_summary: str,
    details: CardDetails,
    library_name: str = "transformers",
) -> str:
    """Write README.md from a run's results.json contents and its CardDetails. `repo_id` is where the model is (or
    will be) found: a Hub repo id or, for a local-only run, the output folder's name."""
    card = ModelCard.from_template(
        _card_data(results, repo_id, library_name, details),
        template_str=_TEMPLATE,
        title=repo_id.rstrip("/").split("/")[-1],
        eval_split=results["eval_split"],
        summary=_summary(results, method_summary),
        metrics_table=_metrics_table(results),
        imbalance=_imbalance(results),
        per_class_table=_per_class_table(results["metrics"]),
        usage=_usage(repo_id, library_name, results.get("threshold") if _is_multi_label(results) else None),
        training=_training(results),
        library_sections=details.library_sections,
        cost=_cost(results),
    )
    path = os.path.join(output_dir, CARD_FILE)
    card.save(path)
    return path


def _card_data(results: dict, repo_id: str, library_name: str, details: CardDetails) -> ModelCardData:
    on_hub = results["dataset"] if details.dataset_on_hub else None
    eval_results = [
        EvalResult(
            task_type="text-classification",
            task_name="Text Classification",
            dataset_type=on_hub or "local",
            dataset_name=results["dataset"],
            dataset_config=details.dataset_config,
            dataset_revision=details.dataset_revision,
            dataset_split=results["eval_split"],
            metric_type="f1" if metric.startswith("f1") else metric,
            metric_name=METRIC_NAMES[metric],
            metric_value=round(results["metrics"][metric], 4),
            metric_config=metric.removeprefix("f1_") if metric.startswith("f1_") else None,
        )
        for metric in METRIC_NAMES
        if metric in results["metrics"]
    ]
    return ModelCardData(
        model_name=repo_id.rstrip("/").split("/")[-1],
        # Metadata names Hub repos only; a local base is named in the text, by its folder's name.
        base_model=details.parent_model or (results["base_model"] if results["base_model_on_hub"] else None),
        datasets=[on_hub] if on_hub else None,
        language=details.language,
        license=details.license,
        library_name=library_name,
        pipeline_tag="text-classification",
        tags=["text-classification", results["method"].replace("_", "-")],
        widget=[{"text": text} for text in details.widget_texts] or None,
        eval_results=eval_results,
    )


def _is_multi_label(results: dict) -> bool:
    return results.get("problem_type") == MULTI_LABEL


def _summary(results: dict, method_summary: str) -> str:
    names = ", ".join(f"`{n}`" for n in results["labels"])
    task = (
        f"to tag text with any of {names} (multi-label)"
        if _is_multi_label(results)
        else f"to classify text as {names}"
    )
    return (
        f"`{results['base_model']}` fine-tuned {task} on `{results['dataset']}`, with "
        f"**{results['method'].replace('_', ' ')}**: {method_summary}"
    )


def _metrics_table(results: dict) -> str:
    metrics, names = results["metrics"], dict(METRIC_NAMES)
    if _is_multi_label(results):
        names["accuracy"] = "Subset accuracy (every label of a text right)"
    rows = [f"| {label} | {metrics[key]:.4f} |" for key, label in names.items() if key in metrics]
    table = "\n".join(["| metric | value |", "|---|---|", *rows])
    if _is_multi_label(results):
        table += f"\n\nA label is predicted when its probability (sigmoid) is at least {results['threshold']}."
    return table


def _imbalance(results: dict) -> str:
    """When the training labels are imbalanced, say so and point at the per-label F1, which accuracy hides; and
    the loss weights, when --class_weight gave some."""
    counts, n = results.get("train_label_counts") or {}, results["num_train_samples"]
    weights = results.get("class_weights")
    lines = []
    if counts and min(counts.values()) / n < IMBALANCE_SHARE:
        rarest = min(counts, key=counts.get)
        lines.append(
            f"The training labels are imbalanced: `{rarest}` is on {counts[rarest]} of {n} texts "
            f"({100 * counts[rarest] / n:.1f}%), so the F1 of each label below says more than accuracy."
        )
        if not weights:
            lines.append("The loss was not weighted (`--class_weight balanced` would weigh it against the imbalance).")
    if weights:
        lines.append(
            "The loss was weighted per label: " + ", ".join(f"`{k}` {w:.3g}" for k, w in weights.items()) + "."
        )
    return " ".join(lines)


def _per_class_table(metrics: dict) -> str:
    rows = [
        f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |"
        for name, m in metrics["per_class"].items()
    ]
    return "\n".join(["| label | precision | recall | F1 | support |", "|---|---|---|---|---|", *rows])


def _usage(repo_id: str, library_name: str, threshold: float | None = None) -> str:
    """How to call the model; a multi-label one (with its `threshold`) returns a score or a 0/1 for every label."""
    if library_name == "setfit" and threshold is not None:
        return (
            "```python\nfrom setfit import SetFitModel\n\n"
            f'model = SetFitModel.from_pretrained("{repo_id}")\n'
            '[probabilities] = model.predict_proba(["What a great movie!"])  # per label, as in model.labels\n'
            f"print([label for label, p in zip(model.labels, probabilities) if p >= {threshold}])\n```"
        )
    if library_name == "setfit":
        return (
            "```python\nfrom setfit import SetFitModel\n\n"
            f'model = SetFitModel.from_pretrained("{repo_id}")\n'
            'print(model.predict(["What a great movie!"]))\n```'
        )
    if threshold is not None:
        return (
            "```python\nfrom transformers import pipeline\n\n"
            f'classifier = pipeline("text-classification", model="{repo_id}", top_k=None)\n'
            'scores = classifier("What a great movie!")  # a sigmoid probability for every label\n'
            f'print([s["label"] for s in scores if s["score"] >= {threshold}])\n```'
        )
    return (
        "```python\nfrom transformers import pipeline\n\n"
        f'classifier = pipeline("text-classification", model="{repo_id}")\n'
        'print(classifier("What a great movie!"))\n```'
    )


def _training(results: dict) -> str:
    lines = [
        f"- Training examples: {results['num_train_samples']}",
        f"- Seed: {results['seed']}",
        *(f"- {key}: {value}" for key, value in results["method_details"].items()),
        *(f"- {key}: {value}" for key, value in results["hyperparameters"].items()),
        *_early_stopping(results.get("early_stopping")),
    ]
    return "\n".join(lines)


def _early_stopping(stopping: dict | None) -> list[str]:
    if not stopping:
        return []
    how = "stopped early" if stopping["stopped_early"] else "ran its full length"
    if stopping["best_step"] is None:
        return [f"- Early stopping: {how}, at step {stopping['stopped_at_step']}; no evaluation ran"]
    return [
        f"- Early stopping: {how}, at step {stopping['stopped_at_step']} of {stopping['max_steps']} (patience: "
        f"{stopping['patience']} evaluations of validation {stopping['metric']}); the model holds the weights of "
        f"step {stopping['best_step']}, the best ({stopping['metric']} {stopping['best_metric']:.4f})"
    ]


def _cost(results: dict) -> str:
    memory = "peak GPU memory" if results["device"].startswith("cuda") else "peak process memory (RSS)"
    speed = f"{results['train_samples_per_second']:.1f} samples/s"
    return "\n".join(
        [
            f"- Training time: {results['train_runtime_s']:.1f} s ({speed})",
            f"- Device: {results['device']}",
            f"- {memory}: {results['peak_memory_mb']:.0f} MB",
            f"- Trainable parameters: {results['trainable_params']:,} of {results['total_params']:,}",
            "- Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        ]
    )


_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

## Results on the {{ eval_split }} split

{{ metrics_table }}
{% if imbalance %}
{{ imbalance }}
{% endif %}
{{ per_class_table }}

## How to use

{{ usage }}

## Training

{{ training }}
{% if library_sections %}
{{ library_sections }}
{% endif %}
## Training cost

{{ cost }}

The full numbers are in `results.json` next to this card.
"""


def write_encoder_card(
    folder: str,
    *,
    repo_id: str,
    base_model: str,
    base_model_on_hub: bool,
    dataset: str,
    num_texts: int,
    perplexity_before: float,
    perplexity_after: float,
    hyperparameters: dict,
    details: CardDetails,
) -> str:
    """README.md for an encoder adapted by continued masked-LM pretraining: a fill-mask model."""
    data = ModelCardData(
        base_model=base_model if base_model_on_hub else None,
        datasets=[dataset] if details.dataset_on_hub else None,
        language=details.language,
        license=details.license,
        library_name="transformers",
        pipeline_tag="fill-mask",
        tags=["fill-mask", "domain-adaptation"],
    )
    settings = "\n".join(f"- {key}: {value}" for key, value in hyperparameters.items())
    content = f"""---
{data.to_yaml()}
---

# {repo_id.rstrip("/").split("/")[-1]}

`{base_model}` after continued masked-language-model pretraining on {num_texts} texts of `{dataset}`, to adapt it
to that domain before a classifier is trained on top of it.

| masked-LM perplexity on held-out text | value |
|---|---|
| before adaptation | {perplexity_before:.2f} |
| after adaptation | {perplexity_after:.2f} |

## How to use

```python
from transformers import pipeline

fill = pipeline("fill-mask", model="{repo_id}")
print(fill("What a horrible {{mask}}!".format(mask=fill.tokenizer.mask_token)))
```

## Training

{settings}
"""
    path = os.path.join(folder, CARD_FILE)
    ModelCard(content).save(path)
    return path
