"""Labeled text in, validated `text`/`label` splits out: load, map columns, validate, split, few-shot sample.

Every problem with the data is found here and reported at once, before any model is loaded. A label column of
lists (or of strings split by --label_delimiter) makes the data multi-label: each text has a set of labels.
"""

import csv
import itertools
import logging
import math
import os
from collections import Counter

import datasets
import numpy as np
from datasets import ClassLabel, DatasetDict, List, Value

from shared.args import DataArguments, parse_class_weight
from shared.errors import InputError
from shared.metrics import MULTI_LABEL

# Suffix of a local file -> the datasets builder that reads it.
FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
# Hub datasets name their splits in several ways; the trainers only know these three.
SPLIT_ALIASES = {"valid": "validation", "dev": "validation", "val": "validation"}
MAX_ROWS_LISTED = 5
# Under this share of the training texts, a label is rare enough that --class_weight is worth a try.
IMBALANCE_SHARE = 0.1
logger = logging.getLogger(__name__)


def load_labeled_data(args: DataArguments, seed: int) -> DatasetDict:
    """Splits `train`, `validation` and (when the data has one) `test`, each with columns `text` and `label`.

    `label` is a ClassLabel whose names become the model's id2label; for multi-label data, a List of that ClassLabel.
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
    if _holds_label_sets(splits, args):
        splits = _to_label_sets(splits, args)
    else:
        splits = _to_class_labels(splits, args)
    _check_class_weight(args.class_weight, label_names(splits))
    if "validation" not in splits:
        splits = _carve_validation(splits, args.validation_split_percentage, seed)
    if args.samples_per_label:
        splits["train"] = sample_per_label(splits["train"], args.samples_per_label, seed)
    if args.class_weight is None:
        _warn_if_imbalanced(splits)
    return splits


def label_names(splits: DatasetDict) -> list[str]:
    feature = splits["train"].features["label"]
    return (feature.feature if is_multi_label(splits) else feature).names


def is_multi_label(splits: DatasetDict | datasets.Dataset) -> bool:
    """Whether each text has a set of labels (a List of ClassLabel) rather than one."""
    split = splits["train"] if isinstance(splits, DatasetDict) else splits
    return isinstance(split.features["label"], List)


def label_counts(splits: DatasetDict) -> list[int]:
    """Training texts of each label, in label-id order (multi-label: the texts that carry it)."""
    labels = splits["train"]["label"]
    counts = Counter(i for ids in labels for i in ids) if is_multi_label(splits) else Counter(labels)
    return [counts[i] for i in range(len(label_names(splits)))]


def label_matrix(split: datasets.Dataset) -> np.ndarray:
    """Multi-label: a text's labels as one 0/1 column per label (multi-hot), the form losses and metrics take."""
    matrix = np.zeros((len(split), len(split.features["label"].feature.names)), dtype=np.float32)
    for row, ids in enumerate(split["label"]):
        matrix[row, ids] = 1.0
    return matrix


def with_multi_hot_labels(splits: DatasetDict) -> DatasetDict:
    """Multi-label splits whose `label` is multi-hot floats: what BCE losses (transformers' and SetFit's) train on."""
    return DatasetDict(
        {
            name: split.remove_columns("label").add_column(
                "label", label_matrix(split).tolist(), feature=List(Value("float32"))
            )
            for name, split in splits.items()
        }
    )


def label_setup(splits: DatasetDict, args: DataArguments) -> dict:
    """What results.json records of the labels: the problem type, the decision threshold (multi-label only), the
    training texts of each label and the loss weights."""
    names = label_names(splits)
    weights = class_weights(splits, args.class_weight)
    multi = is_multi_label(splits)
    return {
        "problem_type": MULTI_LABEL if multi else "single_label_classification",
        "threshold": args.threshold if multi else None,
        "train_label_counts": dict(zip(names, label_counts(splits), strict=True)),
        "class_weights": dict(zip(names, weights, strict=True)) if weights else None,
    }


def class_weights(splits: DatasetDict, class_weight: str | None) -> list[float] | None:
    """The loss weight of each label, in label-id order, from --class_weight; None without it.

    'balanced' is scikit-learn's inverse frequency in train, n / (num_labels * count); for multi-label data each
    label is a yes/no question of its own, so its positives weigh negatives / positives (BCE's pos_weight).
    """
    spec = parse_class_weight(class_weight)
    if spec is None:
        return None
    names = label_names(splits)
    if spec != "balanced":
        return [spec.get(name, 1.0) for name in names]
    n = len(splits["train"])
    if is_multi_label(splits):
        return [(n - count) / count for count in label_counts(splits)]
    return [n / (len(names) * count) if count else 1.0 for count in label_counts(splits)]


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
    if is_multi_label(train):
        return _sample_label_sets(train, k, seed)
    labels = np.asarray(list(train["label"]))
    names = train.features["label"].names
    short = [f"'{names[i]}' has {n}" for i, n in sorted(Counter(labels.tolist()).items()) if n < k]
    if short:
        raise InputError(f"--samples_per_label {k} needs {k} training examples of each label, but " + ", ".join(short))
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == i), size=k, replace=False) for i in range(len(names))]
    return train.select(rng.permutation(np.concatenate(picked)).tolist())


def _sample_label_sets(train: datasets.Dataset, k: int, seed: int) -> datasets.Dataset:
    """Multi-label: seeded texts until each label is on at least K of them (a text counts for all its labels)."""
    names = train.features["label"].feature.names
    label_sets = [set(ids) for ids in train["label"]]
    counts = Counter(i for ids in label_sets for i in ids)
    short = [f"'{name}' is on {counts[i]}" for i, name in enumerate(names) if counts[i] < k]
    if short:
        raise InputError(f"--samples_per_label {k} needs {k} training texts of each label, but " + ", ".join(short))
    rng = np.random.default_rng(seed)
    picked = []
    for i in range(len(names)):
        have = sum(i in label_sets[row] for row in picked)
        candidates = [row for row, ids in enumerate(label_sets) if i in ids and row not in picked]
        picked += rng.choice(candidates, size=max(0, k - have), replace=False).tolist()
    return train.select(rng.permutation(picked).tolist())


def _warn_if_imbalanced(splits: DatasetDict) -> None:
    counts, names = label_counts(splits), label_names(splits)
    rarest = int(np.argmin(counts))
    share = counts[rarest] / len(splits["train"])
    if share < IMBALANCE_SHARE:
        logger.warning(
            "the labels are imbalanced: %r is on %d of %d training texts (%.1f%%); --class_weight balanced weighs "
            "the loss against it",
            names[rarest], counts[rarest], len(splits["train"]), 100 * share,
        )  # fmt: skip


def _check_class_weight(class_weight: str | None, names: list[str]) -> None:
    spec = parse_class_weight(class_weight)
    unknown = sorted(set(spec) - set(names)) if isinstance(spec, dict) else []
    if unknown:
        raise InputError(
            f"--class_weight: unknown label name{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
            f"the labels are {', '.join(map(repr, names))}"
        )


def _load_raw(args: DataArguments) -> DatasetDict:
    if args.train_file is None:
        try:
            raw = datasets.load_dataset(args.dataset_name, args.dataset_config_name, revision=args.dataset_revision)
        except Exception as err:  # datasets raises many types here; all mean "cannot get this dataset"
            raise InputError(f"could not load --dataset_name {args.dataset_name!r}: {err}") from err
    else:
        files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
        files = {split: path for split, path in files.items() if path}
        problems = []
        for split, path in files.items():
            if not os.path.isfile(path):
                problems.append(f"--{split}_file {path} does not exist")
            elif has_no_rows(path):
                problems.append(f"--{split}_file {path} has no rows")
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


def has_no_rows(path: str) -> bool:
    """An empty file, or a CSV of a header only: datasets' own error for these names no file and no reason."""
    if os.path.getsize(path) == 0:
        return True
    if not path.lower().endswith(".csv"):
        return False
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return len(list(itertools.islice(csv.reader(f), 2))) < 2


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


def _holds_label_sets(splits: DatasetDict, args: DataArguments) -> bool:
    """Multi-label data: a column of lists, or --label_delimiter (then a column of strings)."""
    feature = splits["train"].features["label"]
    if args.label_delimiter is None:
        return isinstance(feature, List)
    if isinstance(feature, List | ClassLabel):
        kind = "lists" if isinstance(feature, List) else "class ids"
        raise InputError(
            f"--label_delimiter {args.label_delimiter!r}: column {args.label_column_name!r} already holds {kind}; "
            "leave the flag out"
        )
    return True


def _to_label_sets(splits: DatasetDict, args: DataArguments) -> DatasetDict:
    """Validate text and label sets in every split, then make `label` a List of ClassLabel named after the train
    labels. Every text needs at least one label: an empty cell of a CSV cannot be told from a forgotten one, so
    texts that are none of the labels need a label of their own (`none`)."""
    problems = []
    for split, ds in splits.items():
        problems += _text_problems(split, ds["text"])
    values = {}
    how = f"joined by {args.label_delimiter!r}" if args.label_delimiter else "as a list"
    for split, ds in splits.items():
        values[split], bad = [], []
        for row, value in enumerate(ds["label"]):
            labels = _label_set(value, args.label_delimiter)
            if labels is None:
                bad.append(f"row {row} is {value!r} ({type(value).__name__})")
            elif not labels:
                bad.append(f"row {row} has no label")
            values[split].append(labels or [])
        if bad:
            problems.append(
                f"{split} column {args.label_column_name!r} must hold one or more label names per text, {how}: "
                + _listing(bad)
            )
    if not problems:
        problems += _label_set_problems(values)
    if problems:
        raise InputError(problems)
    names = sorted({label for labels in values["train"] for label in labels})
    ids = {name: i for i, name in enumerate(names)}
    feature = List(ClassLabel(names=names))
    return DatasetDict(
        {
            split: ds.remove_columns("label").add_column(
                "label", [[ids[label] for label in labels] for labels in values[split]], feature=feature
            )
            for split, ds in splits.items()
        }
    )


def _label_set(value, delimiter: str | None) -> list[str] | None:
    """A text's label names, stripped, without repeats; None when the value cannot be a set of names."""
    if value is None:
        return []
    if delimiter is not None:
        value = value.split(delimiter) if isinstance(value, str) else None
    if not isinstance(value, list) or not all(isinstance(label, str) for label in value):
        return None
    return list(dict.fromkeys(label.strip() for label in value if label.strip()))


def _label_set_problems(values: dict[str, list[list[str]]]) -> list[str]:
    problems = []
    train = values["train"]
    counts = Counter(label for labels in train for label in labels)
    if len(counts) < 2:
        only = ", ".join(map(repr, counts)) or "none"
        problems.append(f"train has a single label ({only}); a classifier needs at least two")
    everywhere = sorted(label for label, count in counts.items() if count == len(train))
    if everywhere:
        problems.append(
            f"train has {', '.join(map(repr, everywhere))} on every text: nothing teaches when it does not apply"
        )
    for split, label_sets in values.items():
        unseen = sorted({label for labels in label_sets for label in labels} - counts.keys())
        if unseen:
            problems.append(f"{split} has labels never seen in train: {', '.join(map(repr, unseen))}")
    return problems


def _to_class_labels(splits: DatasetDict, args: DataArguments) -> DatasetDict:
    """Validate text and labels in every split, then make `label` a ClassLabel named after the train labels."""
    splits = _stripped_label_names(splits)
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


STRING_FEATURES = (Value("string"), Value("large_string"))


def _stripped_label_names(splits: DatasetDict) -> DatasetDict:
    """`positive ` and `positive` are one label (a spreadsheet or a hand edit leaves such spaces), as they are in
    multi-label cells; a label of spaces only is no label."""
    return DatasetDict(
        {
            split: ds.map(_strip_labels, batched=True) if ds.features["label"] in STRING_FEATURES else ds
            for split, ds in splits.items()
        }
    )


def _strip_labels(batch: dict) -> dict:
    return {"label": [(label.strip() or None) if isinstance(label, str) else label for label in batch["label"]]}


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
    # datasets stratifies by a ClassLabel only; label sets are held out at random.
    stratify = None if is_multi_label(splits) else "label"
    try:
        carved = splits["train"].train_test_split(test_size=percentage / 100, stratify_by_column=stratify, seed=seed)
    except ValueError as err:
        raise InputError(
            f"cannot hold out a stratified {percentage}% validation split from {len(splits['train'])} training "
            f"rows ({err}); pass --validation_file or raise --validation_split_percentage"
        ) from err
    return DatasetDict({**splits, "train": carved["train"], "validation": carved["test"]})


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_ROWS_LISTED])
    return shown if len(items) <= MAX_ROWS_LISTED else f"{shown} and {len(items) - MAX_ROWS_LISTED} more"
