"""Command-line arguments that every trainer shares: the model, the data, how to train and where the result goes.

One vocabulary for all four methods: flag names follow transformers' TrainingArguments and example scripts, so a
command line written for those works here, and one command line works for every method. Defaults live in the
dataclasses, so `main(...)` called from Python trains exactly as the command line does.
"""

import argparse
import difflib
import json
import math
import os
import sys
from dataclasses import MISSING, dataclass, field, fields, make_dataclass

import torch
import yaml
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

from shared.errors import InputError

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="bert-base-cased",
        metadata={"help": "Hub repo id or local folder of the pretrained encoder to start from."},
    )
    model_revision: str = field(
        default="main", metadata={"help": "Branch, tag or commit of --model_name_or_path on the Hub."}
    )
    # What the published model's card says of its terms and languages; the card leaves out what is not given.
    license: str | None = field(
        default=None, metadata={"help": "License of the trained model, a Hub license id such as apache-2.0."}
    )
    language: list[str] | None = field(
        default=None, metadata={"help": "Languages the trained model handles, as codes: en, or en fr ..."}
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub dataset id. The default, when no --train_file is given either, is rotten_tomatoes."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    dataset_revision: str | None = field(
        default=None, metadata={"help": "Branch, tag or commit of --dataset_name (unset: main); the card records it."}
    )
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
    label_delimiter: str | None = field(
        default=None,
        metadata={"help": "Labels of a text joined by this string (e.g. ';'): a multi-label run. A column of lists "
                  "is multi-label without it."},
    )  # fmt: skip
    class_weight: str | None = field(
        default=None,
        metadata={"help": "Weigh the loss per label against imbalance: 'balanced' (inverse frequency in train), or "
                  "weights by label name, 'spam=5,ham=1' (unnamed labels: 1)."},
    )  # fmt: skip
    threshold: float = field(
        default=0.5, metadata={"help": "Multi-label: a label is predicted when its probability is at least this."}
    )

    def __post_init__(self):
        if self.dataset_name is None and self.train_file is None:
            self.dataset_name = "rotten_tomatoes"
        if not 0 < self.threshold < 1:
            raise InputError(f"--threshold {self.threshold} must lie strictly between 0 and 1")
        if self.label_delimiter == "":
            raise InputError("--label_delimiter must not be empty")
        parse_class_weight(self.class_weight)
        problems = []
        if self.max_seq_length < MIN_SEQ_LENGTH:  # the tokenizer reads 0 and 1 as no limit at all
            problems.append(f"--max_seq_length {self.max_seq_length}: at least {MIN_SEQ_LENGTH} (two special tokens "
                            "and a word)")  # fmt: skip
        if self.samples_per_label is not None and self.samples_per_label < 1:
            problems.append(f"--samples_per_label {self.samples_per_label}: at least 1 (leave it out to train on all)")
        if not 0 < self.validation_split_percentage < 100:
            problems.append(f"--validation_split_percentage {self.validation_split_percentage}: from 1 to 99")
        if self.text_column_name == self.label_column_name:
            problems.append(f"--text_column_name and --label_column_name are both {self.text_column_name!r}")
        if problems:
            raise InputError(problems)


# Room for a model's two special tokens ([CLS] and [SEP], <s> and </s>) and one word.
MIN_SEQ_LENGTH = 3


def parse_class_weight(value: str | dict | None) -> str | dict[str, float] | None:
    """--class_weight as 'balanced' or {label name: weight}: from `balanced`, `name=w,name=w` or a JSON object (what
    a config file's mapping becomes). Label names are checked against the data, once it is loaded."""
    if value is None or value == "balanced":
        return value
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            raise InputError(f"--class_weight {value!r} is not a valid JSON object") from None
    if isinstance(value, str):
        pairs = [item.rpartition("=") for item in value.split(",") if item.strip()]
        if not pairs or any(not sep or not name.strip() for name, sep, _ in pairs):
            raise InputError(f"--class_weight {value!r}: use 'balanced' or label=weight pairs, e.g. 'spam=5,ham=1'")
        value = {name.strip(): weight.strip() for name, _, weight in pairs}
    weights = {}
    for name, weight in value.items():
        try:
            weights[str(name)] = float(weight)
        except (TypeError, ValueError):
            weights[str(name)] = math.nan
        if not math.isfinite(weights[str(name)]) or weights[str(name)] <= 0:
            raise InputError(f"--class_weight: the weight of {name!r} is {weight!r}, not a positive number")
    return weights


def _book(name: str, default, help: str | None = None):
    """A TrainingArguments field with another default (and help); its type comes from the annotation."""
    metadata = dict(TrainingArguments.__dataclass_fields__[name].metadata)
    if help:
        metadata["help"] = help
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RecipeTrainingArguments(TrainingArguments):
    """transformers' TrainingArguments with the book's recipe as defaults: lr 2e-5, batch 16, one epoch, weight
    decay 0.01, an evaluation after each epoch; batches grouped by length (less padding, same accuracy); no
    checkpoints unless asked for; no trackers unless asked for."""

    learning_rate: float = _book("learning_rate", 2e-5)
    per_device_train_batch_size: int = _book("per_device_train_batch_size", 16)
    per_device_eval_batch_size: int = _book("per_device_eval_batch_size", 16)
    num_train_epochs: float = _book("num_train_epochs", 1.0)
    weight_decay: float = _book("weight_decay", 0.01)
    eval_strategy: IntervalStrategy | str = _book("eval_strategy", "epoch")
    save_strategy: SaveStrategy | str = _book("save_strategy", "no")
    report_to: None | str | list[str] = _book("report_to", "none")
    train_sampling_strategy: str = _book("train_sampling_strategy", "group_by_length")
    # Unset: bf16 mixed precision wherever the hardware computes in bf16 (benchmarks/results.md: same accuracy,
    # faster on such CPUs and GPUs); --bf16 false or --fp16 turns it off.
    bf16: bool | None = _book("bf16", None)
    # Pinned memory only speeds up copies to a GPU; on a CPU-only machine it is a warning per batch.
    dataloader_pin_memory: bool = _book("dataloader_pin_memory", torch.cuda.is_available)
    # The other processes of a launch load and train the same model as the first: their warnings repeated its own,
    # transformers' report of the new head's weights once per process (shared.errors.configure_cli_logging).
    log_level_replica: str = _book("log_level_replica", "error")
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Clear --output_dir first when it holds files of another run (otherwise: an error)."},
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop once --metric_for_best_model on the validation split has not improved for N evaluations "
            "in a row, and keep the weights of the best evaluation (checkpoints are saved at each evaluation)."
        },
    )
    metric_for_best_model: str | None = _book(
        "metric_for_best_model",
        None,
        "With --early_stopping_patience: the validation metric to improve. f1 (the default: binary F1 for two "
        "labels, macro F1 for more), f1_macro, accuracy or loss; SetFit: embedding_loss, its body's loss on pairs.",
    )
    export_onnx: bool = field(
        default=False,
        metadata={
            "help": "Also write the final model in int8 ONNX (onnx/model_quantized.onnx, published with it), which "
            "shared.inference serves on CPU instead of the safetensors weights: faster, same labels."
        },
    )

    def __post_init__(self):
        check_hub_model_id(self.hub_model_id)
        settle_precision(self, self.use_cpu)
        if self.bf16 and not torch.cuda.is_available():
            self.use_cpu = True  # transformers trains in bf16 on a CPU only when told that it is one
        super().__post_init__()
        # transformers takes the launcher's mixed precision unless a flag turns one on: --bf16 false would still
        # train in bf16 under a bf16 config, with results.json and the card saying fp32.
        self.mixed_precision = mixed_precision_of(self)
        check_early_stopping(self, CLASSIFIER_METRICS)
        check_ranges(self)


# What `accelerate launch --mixed_precision` (or its config file's mixed_precision) sets for the script.
LAUNCHER_PRECISION = "ACCELERATE_MIXED_PRECISION"


def settle_precision(args, use_cpu: bool = False) -> None:
    """--bf16 and --fp16 as given. Where neither is, the launcher's bf16 or fp16; where it says `no` (also what
    accelerate sets when not told: not a choice), bf16 where the device computes in bf16 (`bf16_by_default`)."""
    launched = os.environ.get(LAUNCHER_PRECISION, "no")
    if args.bf16 is None and not args.fp16 and launched in ("bf16", "fp16"):
        args.bf16, args.fp16 = launched == "bf16", launched == "fp16"
    check_fp16_device(args.fp16, use_cpu)
    args.bf16 = bf16_by_default(args.bf16, args.fp16, use_cpu)


def mixed_precision_of(args) -> str:
    """The settled flags in accelerate's words."""
    return "fp16" if args.fp16 else "bf16" if args.bf16 else "no"


def check_fp16_device(fp16: bool, use_cpu: bool = False) -> None:
    """fp16 only on a GPU: on a CPU accelerate makes no fp16 autocast, so the run trained in fp32 while its
    results.json and card said fp16."""
    if fp16 and (use_cpu or not torch.cuda.is_available()):
        raise InputError(
            "--fp16 needs a GPU: on a CPU the run would train in fp32 all the same (so would accelerate's "
            "mixed_precision fp16). Leave it out (bf16 is the default where the CPU computes in bf16) or pass --bf16 "
            "true"
        )


def bf16_by_default(bf16: bool | None, fp16: bool, use_cpu: bool = False) -> bool:
    """--bf16 as given; unset, True where the device computes in bf16 natively (a CUDA GPU from Ampere on, or a
    CPU with AVX512-BF16 or AMX) and fp16 was not asked for. A GPU that only emulates bf16 (a T4, a V100) trains
    in fp32 by default: torch's emulation is slower than fp32 there."""
    if bf16 is not None:
        return bf16
    if fp16:
        return False
    if torch.cuda.is_available() and not use_cpu:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


# The training flags every method takes, with the same meaning: SetFit maps them onto setfit's own arguments.
COMMON_TRAINING_FLAGS = (
    "output_dir", "seed", "num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size",
    "per_device_eval_batch_size", "report_to", "logging_steps", "bf16", "fp16", "save_strategy", "save_steps",
    "save_total_limit", "resume_from_checkpoint", "overwrite_output_dir",
    "push_to_hub", "hub_model_id", "hub_private_repo", "export_onnx",
    "eval_strategy", "eval_steps", "early_stopping_patience", "metric_for_best_model",
)  # fmt: skip
# What --metric_for_best_model may name: what the Trainer-based methods log at each evaluation (the scalars of
# shared.metrics.summary_metrics, and the loss), with or without the Trainer's `eval_` prefix.
CLASSIFIER_METRICS = ("f1", "f1_macro", "f1_micro", "accuracy", "loss")  # f1_micro: multi-label runs


def check_early_stopping(args, metrics: tuple[str, ...]) -> None:
    """--early_stopping_patience and what it needs, checked as the flags are read: evaluations to compare, a metric
    that the method logs, and checkpoints saved when evaluating (the best one is kept). One error lists every
    problem. Evaluating on validation always works: the data has a validation split, given or held out."""
    if args.early_stopping_patience is None:
        return
    problems = []
    if args.early_stopping_patience < 1:
        problems.append(f"--early_stopping_patience {args.early_stopping_patience}: must be 1 or more evaluations")
    evaluate, save = strategy_name(args.eval_strategy), strategy_name(args.save_strategy)
    if evaluate == "no":
        problems.append(
            "--early_stopping_patience needs evaluations during training, but --eval_strategy is no: pass "
            "--eval_strategy epoch, or --eval_strategy steps --eval_steps N"
        )
    metric = args.metric_for_best_model
    if metric is not None and metric.removeprefix("eval_") not in metrics:
        problems.append(
            f"--metric_for_best_model {metric}: not a metric of this method; use one of {', '.join(metrics)}"
        )
    eval_steps = args.eval_steps or args.logging_steps
    if save not in ("no", evaluate) or (save == "steps" and args.save_steps % eval_steps):
        problems.append(
            f"--early_stopping_patience keeps the best evaluation's checkpoint, but --save_strategy {save} does not "
            f"save at every evaluation (--eval_strategy {evaluate}"
            + (f", --eval_steps {eval_steps}, --save_steps {args.save_steps}" if save == "steps" else "")
            + "): leave --save_strategy out to save at each evaluation"
        )
    if problems:
        raise InputError(problems)


def check_ranges(args) -> None:
    """Numbers that torch, setfit or the data loader would reject with a traceback of their own, or that would train
    nothing while the run reports success, as one error naming each flag; checked when the flags are read."""
    problems = [
        f"--{name} {getattr(args, name)}: at least 1"
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size")
        if getattr(args, name) < 1
    ]
    if args.learning_rate <= 0:
        problems.append(f"--learning_rate {args.learning_rate}: must be positive")
    if args.num_train_epochs <= 0 and args.max_steps <= 0:
        problems.append(f"--num_train_epochs {args.num_train_epochs}: must be positive (or set --max_steps)")
    if not 0 <= args.seed < 2**32:  # numpy's seeds
        problems.append(f"--seed {args.seed}: from 0 to 2**32 - 1")
    if problems:
        raise InputError(problems)


def strategy_name(value) -> str:
    """An eval or save strategy by name, whether the flag's string or transformers' enum (after __post_init__)."""
    return str(getattr(value, "value", value))


def common_training_arguments(class_name: str, metrics: tuple[str, ...] = CLASSIFIER_METRICS, **defaults) -> type:
    """A dataclass of the common training flags, with RecipeTrainingArguments' types, help and defaults (`defaults`
    replace some), for a method that does not train through transformers' Trainer. `metrics`: what its
    --metric_for_best_model may name."""
    specs = []
    for f in fields(RecipeTrainingArguments):
        if f.name in COMMON_TRAINING_FLAGS:
            if f.name in defaults:
                spec = field(default=defaults[f.name], metadata=f.metadata)
            elif f.default is not MISSING:
                spec = field(default=f.default, metadata=f.metadata)
            else:
                spec = field(default_factory=f.default_factory, metadata=f.metadata)
            specs.append((f.name, f.type, spec))

    def __post_init__(self):
        check_hub_model_id(self.hub_model_id)
        settle_precision(self)
        check_early_stopping(self, metrics)
        check_ranges(self)

    return make_dataclass(class_name, specs, namespace={"__post_init__": __post_init__})


def with_defaults(cls: type, class_name: str, **defaults) -> type:
    """A subclass of the dataclass `cls` whose named fields default to other values, with the same type and help:
    how one method's defaults differ from the others' (SetFit's base model, its few-shot sample)."""
    specs = [
        (
            name,
            cls.__dataclass_fields__[name].type,
            field(default=value, metadata=cls.__dataclass_fields__[name].metadata),
        )
        for name, value in defaults.items()
    ]
    return make_dataclass(class_name, specs, bases=(cls,))


@dataclass
class HubArguments:
    """Where the finished model goes. Tokens come from HF_TOKEN or `hf auth login`, never from a flag: a flag's
    value shows in process lists, shell history and the launcher's error messages."""

    push_to_hub: bool = field(default=False, metadata={"help": "Publish the final model to the Hub."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Repo to publish to, `namespace/name`; default: your user and output_dir."}
    )
    hub_private_repo: bool | None = field(default=None, metadata={"help": "Create the repo private."})

    def __post_init__(self):
        check_hub_model_id(self.hub_model_id)


def check_hub_model_id(repo_id: str | None) -> None:
    if repo_id is None:
        return
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise InputError(
            f"--hub_model_id {repo_id!r} is not a valid repo id: use `name` or `namespace/name`, with letters, "
            "digits, '-', '_' and '.' only (at most 96 characters)"
        ) from None


def hub_args_from(training_args) -> HubArguments:
    """Take the publishing flags out of the training arguments.

    The Trainer would otherwise push every checkpoint while training; we publish the final model once, after
    the preflight.
    """
    hub_args = HubArguments(
        push_to_hub=training_args.push_to_hub,
        hub_model_id=training_args.hub_model_id,
        hub_private_repo=training_args.hub_private_repo,
    )
    training_args.push_to_hub = False
    return hub_args


# Flags every script refuses, and why.
REFUSED_FLAGS = {
    "--hub_token": "pass the token through HF_TOKEN or `hf auth login`, never as a flag, where process lists, "
    "shell history and error messages show it",
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the script docstring's layout (its launch command) and show every flag's default."""


class _Parser(HfArgumentParser):
    def error(self, message):
        # argparse would print its whole usage (hundreds of flags) and exit; one line says more.
        raise InputError(f"{message} (see --help)")


def parse_cli(dataclass_types: list[type], description: str, argv: list[str] | None = None, **defaults) -> tuple:
    """Parse the command line into the given dataclasses: flags, or one .yaml/.json config file first and flags
    after it that override the file. Every mistake is reported at once: unknown flags (with the closest real
    one), flags that every script refuses (REFUSED_FLAGS), bad values.

    `defaults` are for what differs per script and never for training (the output folder's name): training
    defaults live in the dataclasses, so that main() called from Python trains as the command line does.
    """
    refused = REFUSED_FLAGS
    parser = _Parser(dataclass_types, description=description, formatter_class=_HelpFormatter, allow_abbrev=False)
    parser.set_defaults(**defaults)
    for action in parser._actions:
        if set(action.option_strings) & refused.keys():
            action.help = argparse.SUPPRESS
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith(CONFIG_SUFFIXES) and not argv[0].startswith("-"):
        argv = config_flags(argv[0], parser) + argv[1:]
    argv, refused_given = _without_flags(argv, refused.keys())
    problems = [f"{flag}: {refused[flag]}" for flag in refused_given]
    options = {option for action in parser._actions for option in action.option_strings}
    problems += [_unknown_flag(t, parser) for t in argv if t.startswith("--") and t.split("=", 1)[0] not in options]
    try:
        _, unknown = parser.parse_known_args(argv)
    except InputError as err:  # a bad value: argparse stops there, after the flags above were all checked
        problems += err.problems
    else:
        for previous, token in zip([None, *unknown], unknown, strict=False):
            if not token.startswith("--") and (previous is None or not previous.startswith("--")):
                problems.append(f"unexpected argument {token!r}")  # not an unknown flag's value
    if problems:
        raise InputError(problems)
    try:
        return parser.parse_args_into_dataclasses(args=argv)
    except ValueError as err:  # a dataclass's own check, e.g. TrainingArguments' combinations of flags
        if isinstance(err, InputError):
            raise
        raise InputError(str(err).strip()) from err


def _without_flags(argv: list[str], flags) -> tuple[list[str], list[str]]:
    """argv without `flags` and their values (which must not be echoed in an error), and those of them given."""
    kept, given = [], []
    tokens = iter(argv)
    for token in tokens:
        flag = token.split("=", 1)[0]
        if flag not in flags:
            kept.append(token)
            continue
        given.append(flag)
        if "=" not in token:
            next(tokens, None)  # the value
    return kept, given


def config_flags(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """A config file's keys and values as the flags they stand for, so a file and a command line mean the same."""
    if not os.path.isfile(path):
        raise InputError(f"config file {path} does not exist")
    with open(path) as f:
        try:
            config = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
        except (ValueError, yaml.YAMLError) as err:
            kind = "JSON" if path.endswith(".json") else "YAML"
            raise InputError(f"config file {path} is not valid {kind}: {err}") from None
    if not isinstance(config, dict):
        raise InputError(f"config file {path} must map flag names to values, like `learning_rate: 2e-5`")
    known = {action.dest for action in parser._actions}
    problems = [f"{path}: {_unknown_flag('--' + key, parser).replace('--', '')}" for key in config if key not in known]
    if problems:
        raise InputError(problems)
    flags = []
    for key, value in config.items():
        if value is None:
            continue  # null: the flag's default
        values = value if isinstance(value, list) else [value]
        flags += [f"--{key}", *(_flag_value(v) for v in values)]
    return flags


def _flag_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, dict) else str(value)


def _unknown_flag(token: str, parser: argparse.ArgumentParser) -> str:
    flag = token.split("=", 1)[0]
    if flag.lstrip("-") in TrainingArguments.__dataclass_fields__:
        return f"{flag}: {parser.prog} does not use this flag of transformers' Trainer; its own flags are in --help"
    options = [option for action in parser._actions for option in action.option_strings]
    close = difflib.get_close_matches(flag, options, n=1, cutoff=0.75)
    return f"{flag}: no such flag" + (f"; did you mean {close[0]}?" if close else " (see --help)")
