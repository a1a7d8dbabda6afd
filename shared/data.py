"""Labeled text in, validated `text`/`label` splits out: load, map columns, validate, split, few-shot sample.

Every problem with the data is found here and reported at once, before any model is loaded.
"""

import math
import os
from collections import Counter

import datasets
import numpy as np
from datasets import ClassLabel, DatasetDict

from shared.args import DataArguments
from shared.errors import InputError

# Suffix of a local file -> the datasets builder that reads it.
FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
# Hub datasets name their splits in several ways; the trainers only know these three.
SPLIT_ALIASES = {"valid": "validation", "dev": "validation", "val": "validation"}
MAX_ROWS_LISTED = 5


def load_labeled_data(args: DataArguments, seed: int) -> DatasetDict:
    """Splits `train`, `validation` and (when the data has one) `test`, each with columns `text` and `label`.

    `label` is a ClassLabel whose names become the model's id2label.
    """
    raw = _load_raw(args)
    _check_columns(raw, args)
    splits = DatasetDict(
        {
            name: ds.select_columns([args.text_column_name, args.label_column_name]).rename_columns(
                {args.text_column_name: "text", args.label_column_name: "label"}
            )
            for name, ds in raw.items()
        }
    )
    splits = _to_class_labels(splits, args)
    if "validation" not in splits:
        splits = _carve_validation(splits, args.validation_split_percentage, seed)
    if args.samples_per_label:
        splits["train"] = sample_per_label(splits["train"], args.samples_per_label, seed)
    return splits


def label_names(splits: DatasetDict) -> list[str]:
    return splits["train"].features["label"].names


def eval_split_name(splits: DatasetDict) -> str:
    """The split the reported metrics come from: test when there is one, else validation."""
    return "test" if "test" in splits else "validation"


def dataset_source(args: DataArguments) -> str:
    """How the model card names the data: the Hub id, or the local files' names (never their full paths)."""
    if args.train_file is None:
        return args.dataset_name
    files = [args.train_file, args.validation_file, args.test_file]
    return ", ".join(os.path.basename(f) for f in files if f)


def sample_per_label(train: datasets.Dataset, k: int, seed: int) -> datasets.Dataset:
    """K seeded random examples of each label, so every method can be compared on the same few-shot data."""
    labels = np.asarray(list(train["label"]))
    names = train.features["label"].names
    short = [f"'{names[i]}' has {n}" for i, n in sorted(Counter(labels.tolist()).items()) if n < k]
    if short:
        raise InputError(f"--samples_per_label {k} needs {k} training examples of each label, but " + ", ".join(short))
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == i), size=k, replace=False) for i in range(len(names))]
    return train.select(rng.permutation(np.concatenate(picked)).tolist())


def _load_raw(args: DataArguments) -> DatasetDict:
    if args.train_file is None:
        try:
            raw = datasets.load_dataset(args.dataset_name, args.dataset_config_name, revision=args.dataset_revision)
        except Exception as err:  # datasets raises many types here; all mean "cannot get this dataset"
            raise InputError(f"could not load --dataset_name {args.dataset_name!r}: {err}") from err
    else:
        files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
        files = {split: path for split, path in files.items() if path}
        problems = [
            f"--{split}_file {path} does not exist" for split, path in files.items() if not os.path.isfile(path)
        ]
        suffixes = {os.path.splitext(path)[1].lower() for path in files.values()}
        unknown = sorted(suffixes - FILE_BUILDERS.keys())
        if unknown:
            problems.append(f"unsupported file type {', '.join(unknown)}; use one of {', '.join(FILE_BUILDERS)}")
        elif len({FILE_BUILDERS[s] for s in suffixes}) > 1:
            problems.append("--train_file, --validation_file and --test_file must share one format")
        if problems:
            raise InputError(problems)
        try:
            raw = datasets.load_dataset(FILE_BUILDERS[suffixes.pop()], data_files=files)
        except Exception as err:
            raise InputError(f"could not read {', '.join(files.values())}: {err}") from err
    raw = DatasetDict({SPLIT_ALIASES.get(name, name): ds for name, ds in raw.items()})
    if "train" not in raw:
        raise InputError(f"the dataset has no train split; it has: {', '.join(raw)}")
    return DatasetDict({name: raw[name] for name in ("train", "validation", "test") if name in raw})


def _check_columns(raw: DatasetDict, args: DataArguments) -> None:
    problems = []
    for split, ds in raw.items():
        for flag, column in (
            ("--text_column_name", args.text_column_name),
            ("--label_column_name", args.label_column_name),
        ):
            if column not in ds.column_names:
                problems.append(
                    f"{split} has no column {column!r} ({flag}); its columns are: {', '.join(ds.column_names)}"
                )
    if problems:
        raise InputError(problems)


def _to_class_labels(splits: DatasetDict, args: DataArguments) -> DatasetDict:
    """Validate text and labels in every split, then make `label` a ClassLabel named after the train labels."""
    problems = []
    for split, ds in splits.items():
        problems += _text_problems(split, ds["text"])
    feature = splits["train"].features["label"]
    if isinstance(feature, ClassLabel):
        names = feature.names
        problems += _classlabel_problems(splits, names)
    else:
        values = {split: list(ds["label"]) for split, ds in splits.items()}
        names, label_problems = _label_names(values, args.label_column_name)
        problems += label_problems
    if names:  # the train labels are usable labels: are there enough of them?
        present = set(splits["train"]["label"])  # ids for a ClassLabel, the raw values otherwise
        if len(present) < 2:
            only = [names[i] if isinstance(feature, ClassLabel) else i for i in present]
            problems.append(f"train has a single label ({only[0]!r}); a classifier needs at least two")
    if problems:
        raise InputError(problems)
    # Label names map to their index in `names`; integers 0..n-1 already are those indices.
    return splits if isinstance(feature, ClassLabel) else splits.cast_column("label", ClassLabel(names=names))


def _text_problems(split: str, texts) -> list[str]:
    bad = []
    for row, text in enumerate(texts):
        if text is None or (isinstance(text, str) and not text.strip()):
            bad.append(f"row {row} is empty")
        elif not isinstance(text, str):
            bad.append(f"row {row} is {text!r} ({type(text).__name__}), not a string")
    return [f"{split} text: {_listing(bad)}"] if bad else []


def _classlabel_problems(splits: DatasetDict, names: list[str]) -> list[str]:
    problems = []
    for split, ds in splits.items():
        feature = ds.features["label"]
        if not isinstance(feature, ClassLabel) or feature.names != names:
            problems.append(f"{split} labels are not the train split's ClassLabel {names}")
            continue
        unlabeled = [f"row {row}" for row, label in enumerate(ds["label"]) if label < 0]
        if unlabeled:
            problems.append(f"{split} has rows without a label (-1): {_listing(unlabeled)}")
    return problems


def _label_names(values: dict[str, list], column: str) -> tuple[list[str], list[str]]:
    """Names for string or integer labels, and the problems that stop them from being labels."""
    problems = []
    for split, labels in values.items():
        bad = []
        for row, label in enumerate(labels):
            if label is None or (isinstance(label, float) and math.isnan(label)):
                bad.append(f"row {row} has no label")
            elif isinstance(label, float | bool) or not isinstance(label, str | int):
                bad.append(f"row {row} is {label!r} ({type(label).__name__})")
        if bad:
            problems.append(f"{split} column {column!r} must hold label names or integers 0..n-1: {_listing(bad)}")
    if problems:
        return [], problems

    train = set(values["train"])
    if all(isinstance(v, int) for v in train):
        expected = set(range(len(train)))
        if train != expected:
            problems.append(
                f"integer labels must be 0..n-1; train has {sorted(train)}, "
                f"so it lacks {sorted(expected - train) or 'none'} and has {sorted(train - expected)} beyond"
            )
        names = [str(i) for i in sorted(train)]
    elif all(isinstance(v, str) for v in train):
        names = sorted(train)
    else:
        return [], [f"train column {column!r} mixes label names and integers"]
    for split, labels in values.items():
        unseen = sorted({str(v) for v in labels} - {str(v) for v in train})
        if unseen:
            problems.append(f"{split} has labels never seen in train: {', '.join(map(repr, unseen))}")
    return names, problems


def _carve_validation(splits: DatasetDict, percentage: int, seed: int) -> DatasetDict:
    try:
        carved = splits["train"].train_test_split(test_size=percentage / 100, stratify_by_column="label", seed=seed)
    except ValueError as err:
        raise InputError(
            f"cannot hold out a stratified {percentage}% validation split from {len(splits['train'])} training "
            f"rows ({err}); pass --validation_file or raise --validation_split_percentage"
        ) from err
    return DatasetDict({**splits, "train": carved["train"], "validation": carved["test"]})


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_ROWS_LISTED])
    return shown if len(items) <= MAX_ROWS_LISTED else f"{shown} and {len(items) - MAX_ROWS_LISTED} more"
