"""Sequence classification on transformers: the steps that full fine-tuning, layer freezing and the MLM
method's second phase share, so the three train and evaluate a classifier the same way."""

import numpy as np
import torch
from datasets import DatasetDict
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from shared.args import DataArguments
from shared.hub import load_pretrained
from shared.metrics import classification_metrics, trainer_compute_metrics

# Command-line defaults of the Trainer-based scripts: the book's recipe (lr 2e-5, batch 16, one epoch, weight
# decay 0.01), length-grouped batches, an evaluation after each epoch, no checkpoints unless asked for.
BOOK_RECIPE = {
    "learning_rate": 2e-5,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 16,
    "num_train_epochs": 1,
    "weight_decay": 0.01,
    "eval_strategy": "epoch",
    "save_strategy": "no",
    "report_to": "none",
    "train_sampling_strategy": "group_by_length",
    "dataloader_pin_memory": torch.cuda.is_available(),  # pinned memory only speeds up copies to a GPU
}


def tokenize_splits(splits: DatasetDict, tokenizer: PreTrainedTokenizerBase, max_seq_length: int) -> DatasetDict:
    """Truncate without padding: DataCollatorWithPadding pads each batch only to its longest text."""
    limit = min(max_seq_length, tokenizer.model_max_length)
    return splits.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=limit),
        batched=True,
        remove_columns=["text"],
        desc="Tokenizing",
    )


def load_classifier(model_name_or_path: str, revision: str, label_names: list[str]):
    """The encoder with a new classification head whose id2label/label2id carry the dataset's label names,
    so `pipeline("text-classification")` on the saved model answers with names, not LABEL_0."""
    return load_pretrained(
        AutoModelForSequenceClassification,
        model_name_or_path,
        revision,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )


def classifier_trainer(model, tokenizer, tokenized: DatasetDict, training_args: TrainingArguments) -> Trainer:
    """A Trainer on train, evaluating on validation, with batches padded only as far as their longest text."""
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        # Lengths in multiples of 8 suit tensor cores under mixed precision.
        data_collator=DataCollatorWithPadding(
            tokenizer, pad_to_multiple_of=8 if training_args.mixed_precision != "no" else None
        ),
        compute_metrics=trainer_compute_metrics(model.config.num_labels),
    )


def evaluate_classifier(trainer: Trainer, dataset, label_names: list[str]) -> dict:
    """Full metrics (per class and confusion matrix included) of the trained model on `dataset`."""
    output = trainer.predict(dataset, metric_key_prefix="eval")
    return classification_metrics(output.label_ids, np.argmax(output.predictions, axis=-1), label_names)


def hyperparameters(training_args: TrainingArguments, data_args: DataArguments) -> dict:
    """What the model card and results.json record of how a Trainer-based run was configured."""
    return {
        "learning_rate": training_args.learning_rate,
        "num_train_epochs": training_args.num_train_epochs,
        "max_steps": training_args.max_steps,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "processes": training_args.world_size,
        "weight_decay": training_args.weight_decay,
        "warmup_steps": training_args.warmup_steps,
        "lr_scheduler_type": str(training_args.lr_scheduler_type.value),
        "max_seq_length": data_args.max_seq_length,
        "samples_per_label": data_args.samples_per_label,
        "mixed_precision": training_args.mixed_precision,
    }
