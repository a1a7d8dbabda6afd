"""shared.data: what a user's labeled files become, and the one clear error for each kind of bad input."""

from collections import Counter

import pytest
from datasets import ClassLabel, Dataset

from shared.args import DataArguments
from shared.data import dataset_source, eval_split_name, label_names, load_labeled_data
from shared.errors import InputError
from tiny import load_rows as load


def rows(labels, texts=None) -> list[dict]:
    return [{"text": texts[i] if texts else f"review number {i}", "label": label} for i, label in enumerate(labels)]


def test_maps_columns_and_names_labels_from_strings(data_args):
    splits = load_labeled_data(data_args, seed=0)

    assert set(splits) == {"train", "validation", "test"}
    assert splits["train"].column_names == ["text", "label"]
    assert label_names(splits) == ["negative", "positive"]
    assert isinstance(splits["test"].features["label"], ClassLabel)
    assert len(splits["train"]) == 48 and eval_split_name(splits) == "test"
    assert dataset_source(data_args) == "train.csv, validation.csv, test.csv"


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_reads_json_and_jsonl(tmp_path, suffix):
    splits = load(tmp_path, rows(["b", "a"] * 10), suffix=suffix, validation_split_percentage=20)
    assert label_names(splits) == ["a", "b"]
    assert len(splits["train"]) + len(splits["validation"]) == 20


def test_parquet_keeps_a_classlabel_and_its_names(tmp_path):
    features = {"text": [f"text {i}" for i in range(30)], "label": [i % 3 for i in range(30)]}
    ds = Dataset.from_dict(features).cast_column("label", ClassLabel(names=["neg", "neu", "pos"]))
    ds.to_parquet(str(tmp_path / "train.parquet"))

    args = DataArguments(train_file=str(tmp_path / "train.parquet"), validation_split_percentage=20)
    splits = load_labeled_data(args, seed=0)

    assert label_names(splits) == ["neg", "neu", "pos"]


def test_integer_labels_become_named_ids(tmp_path):
    splits = load(tmp_path, rows([0, 1, 2] * 10))
    assert label_names(splits) == ["0", "1", "2"]
    assert sorted(set(splits["train"]["label"]) | set(splits["validation"]["label"])) == [0, 1, 2]


def test_validation_is_carved_stratified_and_seeded(tmp_path):
    labels = ["pos"] * 80 + ["neg"] * 20
    splits = load(tmp_path, rows(labels), validation_split_percentage=10)
    again = load(tmp_path, rows(labels), validation_split_percentage=10)

    held_out = Counter(splits["validation"]["label"])
    assert held_out == Counter({1: 8, 0: 2})  # the 80/20 balance of train, exactly
    assert len(splits["train"]) == 90
    assert list(splits["validation"]["text"]) == list(again["validation"]["text"])
    assert eval_split_name(splits) == "validation"


def test_samples_per_label_is_stratified_and_seeded(tmp_path, data_args):
    data_args.samples_per_label = 4
    first = load_labeled_data(data_args, seed=1)
    same = load_labeled_data(data_args, seed=1)
    other = load_labeled_data(data_args, seed=2)

    assert Counter(first["train"]["label"]) == {0: 4, 1: 4}
    assert list(first["train"]["text"]) == list(same["train"]["text"])
    assert list(first["train"]["text"]) != list(other["train"]["text"])
    assert len(first["test"]) == 16  # evaluation data is never sampled down


def test_samples_per_label_more_than_a_label_has(tmp_path):
    with pytest.raises(InputError, match=r"--samples_per_label 12 needs 12 .* 'neg' has 9"):
        load(tmp_path, rows(["pos", "neg"] * 10), samples_per_label=12)


def test_missing_columns_are_named_with_the_columns_that_exist(reviews):
    args = DataArguments(train_file=reviews["train"], text_column_name="txt")
    with pytest.raises(InputError) as err:
        load_labeled_data(args, seed=0)
    message = str(err.value)
    assert "no column 'txt' (--text_column_name)" in message
    assert "no column 'label' (--label_column_name)" in message
    assert "review, sentiment, source" in message


def test_empty_and_missing_text_name_the_rows(tmp_path):
    texts = ["good", "", "fine", "   ", "ok", None, "nice", "bad"] * 2
    train = [{"text": t, "label": ["a", "b"][i % 2]} for i, t in enumerate(texts)]
    with pytest.raises(InputError, match=r"train text: row 1 is empty, row 3 is empty, row 5 is empty, row 9"):
        load(tmp_path, train, suffix=".jsonl")


def test_integer_labels_must_be_0_to_n_minus_1(tmp_path):
    with pytest.raises(InputError, match=r"integer labels must be 0..n-1; train has \[0, 2, 5\]"):
        load(tmp_path, rows([0, 2, 5] * 5))


def test_float_and_nan_labels_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"row 0 is 0.5 \(float\)"):
        load(tmp_path, rows([0.5, 1.0] * 5), suffix=".jsonl")
    # A CSV with an empty label cell: pandas reads the column as floats with a NaN.
    with pytest.raises(InputError, match=r"row 3 has no label"):
        load(tmp_path, rows([1, 0, 1, None, 0, 1]))


def test_a_single_class_cannot_train_a_classifier(tmp_path):
    with pytest.raises(InputError, match=r"train has a single label \('pos'\)"):
        load(tmp_path, rows(["pos"] * 10), validation=rows(["pos", "neg"]))


def test_test_labels_never_seen_in_train(tmp_path):
    with pytest.raises(InputError, match=r"test has labels never seen in train: 'neutral'"):
        load(tmp_path, rows(["pos", "neg"] * 5), validation=rows(["pos", "neg"]), test=rows(["neutral", "pos"]))


def test_every_problem_is_reported_at_once(tmp_path):
    train = rows(["pos", "neg"] * 5, texts=["", *["text"] * 9])
    with pytest.raises(InputError) as err:
        load(tmp_path, train, validation=rows(["pos", "neg"]), test=rows(["maybe", "pos"]))
    assert len(err.value.problems) == 2
    assert "train text: row 0 is empty" in str(err.value)
    assert "never seen in train: 'maybe'" in str(err.value)


def test_missing_file_and_unsupported_format(tmp_path):
    with pytest.raises(InputError, match=r"--train_file .*nope.csv does not exist"):
        load_labeled_data(DataArguments(train_file=str(tmp_path / "nope.csv")), seed=0)
    (tmp_path / "train.xlsx").write_text("x")
    with pytest.raises(InputError, match=r"unsupported file type .xlsx"):
        load_labeled_data(DataArguments(train_file=str(tmp_path / "train.xlsx")), seed=0)


def test_too_little_data_to_carve_a_validation_split(tmp_path):
    with pytest.raises(InputError, match="pass --validation_file"):
        load(tmp_path, rows(["a", "b", "c", "d"]))


def test_label_names_that_differ_only_in_spaces_are_one_label(tmp_path):
    splits = load(tmp_path, rows(["pos", "neg", "pos ", " neg"] * 4), validation=rows(["pos", "neg "]))
    assert label_names(splits) == ["neg", "pos"]
    assert Counter(splits["train"]["label"]) == {0: 8, 1: 8}
    with pytest.raises(InputError, match=r"row 2 has no label"):
        load(tmp_path, rows(["pos", "neg", "  ", "neg"] * 4))


@pytest.mark.parametrize("content", ["", "text,label\n"], ids=["empty", "header only"])
def test_a_data_file_without_rows_is_named(tmp_path, content):
    load(tmp_path, rows(["pos", "neg"] * 5), validation=rows(["pos", "neg"]), test=rows(["pos", "neg"]))
    (tmp_path / "test.csv").write_text(content)
    files = {f"{split}_file": str(tmp_path / f"{split}.csv") for split in ("train", "validation", "test")}
    with pytest.raises(InputError, match=r"--test_file .*test.csv has no rows"):
        load_labeled_data(DataArguments(**files), seed=0)
