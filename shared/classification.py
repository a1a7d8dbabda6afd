"""The Trainer-based recipe: tokenize, build the classifier, train, evaluate, save, write the card, publish.

Full fine-tuning, layer freezing and the MLM method's second phase all run `train_classifier`; what sets one
method apart is a `Method`: its name and card summary, which weights train, and what else it records.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import DatasetDict
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)

from shared.args import DataArguments, ModelArguments
from shared.card import card_details, widget_texts
from shared.data import (
    class_weights,
    dataset_source,
    eval_split_name,
    is_multi_label,
    label_names,
    label_setup,
    with_multi_hot_labels,
)
from shared.hub import PUSH_IGNORE, HubTarget, load_pretrained
from shared.metrics import (
    MULTI_LABEL,
    classification_metrics,
    multi_label_metrics,
    over_threshold,
    sigmoid,
    trainer_compute_metrics,
)
from shared.onnx_export import export_int8
from shared.publish import publish
from shared.results import build_results, count_parameters
from shared.training import (
    check_checkpoint_fits,
    early_stopping,
    early_stopping_summary,
    full_disk_is_one_error,
    keep_logs_in,
    max_length_for,
    run_training,
    save_final_model,
)


@dataclass
class Method:
    """What one Trainer-based method adds to the recipe."""

    name: str
    summary: str  # the card's one-line account of what trains
    # Called on the freshly built classifier, before training: decides which weights train, and returns what
    # results.json should record about it.
    prepare_model: Callable[[PreTrainedModel], dict] | None = None
    details: dict = field(default_factory=dict)  # more for results.json's method_details
    hyperparameters: dict = field(default_factory=dict)  # the method's own flags, for the card
    base_model: str | None = None  # what the card names as the base, when training starts from another encoder
    parent_model: str | None = None  # that other encoder's Hub repo, when it has one: the card's base_model metadata
    # A phase that ran before this one (masked-LM adaptation) is part of the method's cost.
    earlier_runtime_s: float = 0.0
    earlier_samples: float = 0.0
    publish_ignore: list[str] = field(default_factory=list)
    phase: str | None = None  # for a method of several phases: which one this is, recorded in its checkpoints
    # Flags that decide which weights train: the optimizer state of a checkpoint fits no other values of them.
    run_flags: dict = field(default_factory=dict)

    @property
    def run(self) -> dict:
        """What the run's checkpoints record of it, so a resume never continues another method's run."""
        return {"method": self.name, **({"phase": self.phase} if self.phase else {}), **self.run_flags}


def train_classifier(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    splits: DatasetDict,
    target: HubTarget | None,
    method: Method,
) -> dict:
    """Train a sequence classifier from `model_args`' encoder on `splits`, evaluate it, save it to
    output_dir with its card and results.json, and publish it to `target` when given. Returns the results."""
    names = label_names(splits)
    multi_label = is_multi_label(splits)
    # A multi-label model decides each label by its own sigmoid against the threshold; one label: the argmax.
    threshold = data_args.threshold if multi_label else None
    tokenizer = load_pretrained(AutoTokenizer, model_args.model_name_or_path, model_args.model_revision)
    config = load_pretrained(AutoConfig, model_args.model_name_or_path, model_args.model_revision)
    max_length = max_length_for(data_args.max_seq_length, tokenizer, config)
    with training_args.main_process_first(desc="tokenizing"):
        tokenized = tokenize_splits(with_multi_hot_labels(splits) if multi_label else splits, tokenizer, max_length)

    # Seed before building the model, so the new head starts from the same weights on every run.
    set_seed(training_args.seed)
    model = load_classifier(model_args.model_name_or_path, model_args.model_revision, names, multi_label)
    check_checkpoint_fits(training_args.resume_from_checkpoint, model, model_args.model_name_or_path, names)
    details = method.prepare_model(model) if method.prepare_model else {}
    trainable_params, total_params = count_parameters(model)

    keep_logs_in(training_args.output_dir)
    metric = best_model_metric(training_args.metric_for_best_model, len(names), multi_label)
    stopping = early_stopping(training_args, metric)
    weights = class_weights(splits, data_args.class_weight)
    trainer = classifier_trainer(model, tokenizer, tokenized, training_args, threshold, weights, callbacks=stopping)
    output = run_training(trainer, method.run, training_args.resume_from_checkpoint, training_args.export_onnx)
    runtime = method.earlier_runtime_s + output.metrics["train_runtime"]
    samples = method.earlier_samples + output.metrics["train_samples_per_second"] * output.metrics["train_runtime"]
    eval_split = eval_split_name(splits)
    results = build_results(
        method=method.name,
        base_model=method.base_model or model_args.model_name_or_path,
        dataset=dataset_source(data_args),
        label_names=names,
        num_train_samples=len(splits["train"]),
        eval_split=eval_split,
        metrics=evaluate_classifier(trainer, tokenized[eval_split], names, threshold),
        train_runtime_s=runtime,
        train_samples_per_second=samples / runtime,
        trainable_params=trainable_params,
        total_params=total_params,
        seed=training_args.seed,
        hyperparameters={**hyperparameters(training_args, max_length, data_args), **method.hyperparameters},
        num_processes=training_args.world_size,
        method_details={**details, **method.details},
        early_stopping=early_stopping_summary(trainer.state, training_args),
        **label_setup(splits, data_args),
    )

    with full_disk_is_one_error(training_args.output_dir):
        save_final_model(trainer, training_args.output_dir)
        if trainer.is_world_process_zero():
            if training_args.export_onnx:
                export_int8(training_args.output_dir)
            ignore = [*PUSH_IGNORE, *method.publish_ignore]
            card = card_details(
                model_args, data_args, widget_texts=widget_texts(splits[eval_split]), parent_model=method.parent_model
            )
            publish(
                training_args.output_dir,
                results,
                target,
                method_summary=method.summary,
                details=card,
                ignore_patterns=ignore,
            )
    return results


def tokenize_splits(splits: DatasetDict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> DatasetDict:
    """Truncate without padding: DataCollatorWithPadding pads each batch only to its longest text."""
    return splits.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=["text"],
        desc="Tokenizing",
    )


def load_classifier(model_name_or_path: str, revision: str, label_names: list[str], multi_label: bool = False):
    """The encoder with a new classification head whose id2label/label2id carry the dataset's label names,
    so `pipeline("text-classification")` on the saved model answers with names, not LABEL_0. A multi-label
    model's config says so: transformers then trains it with BCE and the pipeline scores with a sigmoid."""
    return load_pretrained(
        AutoModelForSequenceClassification,
        model_name_or_path,
        revision,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        **({"problem_type": MULTI_LABEL} if multi_label else {}),
    )


def best_model_metric(metric: str | None, num_labels: int, multi_label: bool) -> str:
    """What --metric_for_best_model names in the Trainer's evaluation logs. f1, the default, is the F1 that
    results.json reports: binary F1 for two labels, macro F1 for more or for sets of labels (binary F1 exists for
    one label of two only)."""
    metric = (metric or "f1").removeprefix("eval_")
    return "f1_macro" if metric == "f1" and (num_labels > 2 or multi_label) else metric


def classifier_trainer(
    model,
    tokenizer,
    tokenized: DatasetDict,
    training_args: TrainingArguments,
    threshold: float | None = None,
    weights: list[float] | None = None,
    callbacks: list | None = None,
) -> Trainer:
    """A Trainer on train, evaluating on validation, with batches padded only as far as their longest text;
    multi-label when given a `threshold`, with the loss weighted per label when given `weights`."""
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=padding_multiple(training_args)),
        compute_metrics=trainer_compute_metrics(model.config.num_labels, threshold),
        compute_loss_func=weighted_loss(weights, multi_label=threshold is not None) if weights else None,
        callbacks=callbacks,
    )


def padding_multiple(training_args: TrainingArguments) -> int | None:
    """Lengths in multiples of 8 suit a GPU's tensor cores under mixed precision. A CPU gains nothing from them and
    pays for every padding token: on the demo reviews (9-23 tokens) they added 18% tokens and made a step 7% slower
    (benchmarks/findings.md)."""
    return 8 if training_args.mixed_precision != "no" and training_args.device.type == "cuda" else None


def weighted_loss(weights: list[float], multi_label: bool) -> Callable:
    """A `compute_loss_func` for transformers' Trainer: the model's own loss (cross-entropy, or BCE for multi-label)
    with a weight per label (multi-label: on that label's positives, BCE's pos_weight).

    The Trainer passes the number of labels in the whole accumulated batch and takes the loss as already scaled
    for gradient accumulation, so the loss is a sum over that count, not a per-batch mean."""
    weight = torch.tensor(weights)

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        if multi_label:
            losses = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, labels.to(logits.dtype), pos_weight=weight.to(logits.device, logits.dtype), reduction="none"
            )
        else:
            losses = torch.nn.functional.cross_entropy(
                logits, labels, weight=weight.to(logits.device, logits.dtype), reduction="none"
            )
        return losses.sum() / num_items_in_batch if num_items_in_batch is not None else losses.mean()

    return loss


def evaluate_classifier(trainer: Trainer, dataset, label_names: list[str], threshold: float | None = None) -> dict:
    """Full metrics (per class and, for one label per text, the confusion matrix) of the trained model on
    `dataset`; multi-label when given the decision `threshold`."""
    output = trainer.predict(dataset, metric_key_prefix="eval")
    if threshold is not None:
        predicted = over_threshold(sigmoid(output.predictions), threshold)
        return multi_label_metrics(output.label_ids.astype(int), predicted, label_names)
    return classification_metrics(output.label_ids, np.argmax(output.predictions, axis=-1), label_names)


def hyperparameters(training_args: TrainingArguments, max_length: int, data_args: DataArguments) -> dict:
    """What the model card and results.json record of how a Trainer-based run was configured."""
    return {
        "learning_rate": training_args.learning_rate,
        "num_train_epochs": training_args.num_train_epochs,
        "max_steps": training_args.max_steps,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "train_sampling_strategy": training_args.train_sampling_strategy,
        "processes": training_args.world_size,
        "weight_decay": training_args.weight_decay,
        "warmup_steps": training_args.warmup_steps,
        "lr_scheduler_type": str(training_args.lr_scheduler_type.value),
        "max_seq_length": max_length,  # what the model saw: --max_seq_length, unless the model takes fewer
        "samples_per_label": data_args.samples_per_label,
        "mixed_precision": training_args.mixed_precision,
    }
