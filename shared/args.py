"""Command-line arguments that every trainer shares: the model, the data and where the result is published.

Flag names follow the transformers example scripts, so a command line written for those works here.
"""

import argparse
from dataclasses import dataclass, field

from transformers import HfArgumentParser, TrainingArguments


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="bert-base-cased",
        metadata={"help": "Hub repo id or local folder of the pretrained encoder to start from."},
    )
    model_revision: str = field(
        default="main", metadata={"help": "Branch, tag or commit of --model_name_or_path on the Hub."}
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub dataset id. The default, when no --train_file is given either, is rotten_tomatoes."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    train_file: str | None = field(
        default=None, metadata={"help": "Local training data: csv, json, jsonl or parquet."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Local validation data. Without it a stratified split is carved from train."}
    )
    test_file: str | None = field(
        default=None, metadata={"help": "Local test data. Without a test split, the validation split is reported."}
    )
    text_column_name: str = field(default="text", metadata={"help": "Column that holds the text to classify."})
    label_column_name: str = field(
        default="label", metadata={"help": "Column that holds the label: names, a ClassLabel or integers 0..n-1."}
    )
    max_seq_length: int = field(default=256, metadata={"help": "Texts are truncated to this many tokens."})
    samples_per_label: int | None = field(
        default=None,
        metadata={"help": "Train on only K examples of each label (seeded, stratified): the few-shot setting."},
    )
    validation_split_percentage: int = field(
        default=10, metadata={"help": "Share of train held out for validation when there is no validation split."}
    )

    def __post_init__(self):
        if self.dataset_name is None and self.train_file is None:
            self.dataset_name = "rotten_tomatoes"


@dataclass
class HubArguments:
    """Where the finished model goes. Trainers on transformers' Trainer take these from TrainingArguments."""

    push_to_hub: bool = field(default=False, metadata={"help": "Publish the final model to the Hub."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Repo to publish to, `namespace/name`; default: your user and output_dir."}
    )
    hub_private_repo: bool | None = field(default=None, metadata={"help": "Create the repo private."})
    hub_token: str | None = field(
        default=None, repr=False, metadata={"help": "Token to publish with; default: HF_TOKEN or login."}
    )


def hub_args_from(training_args: TrainingArguments) -> HubArguments:
    """Take the publishing flags out of TrainingArguments.

    The Trainer would otherwise push every checkpoint while training, and pickle the token into
    training_args.bin; we publish the final model once, after the preflight, with the token held only here.
    """
    hub_args = HubArguments(
        push_to_hub=training_args.push_to_hub,
        hub_model_id=training_args.hub_model_id,
        hub_private_repo=training_args.hub_private_repo,
        hub_token=training_args.hub_token,
    )
    training_args.push_to_hub = False
    training_args.hub_token = None
    return hub_args


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the script docstring's layout (its launch command) and show every flag's default."""


def parse_cli(dataclass_types: list[type], description: str, **defaults) -> tuple:
    """Parse the command line into the given dataclasses; `defaults` replace the dataclasses' own defaults."""
    parser = HfArgumentParser(dataclass_types, description=description, formatter_class=_HelpFormatter)
    parser.set_defaults(**defaults)
    return parser.parse_args_into_dataclasses()
