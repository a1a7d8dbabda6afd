"""Multi-label classification: label sets read and checked like single labels, the four methods trained on a
multi-label CSV, and the saved models read back by plain transformers/setfit and by the app."""

import csv
import json
import os
import shutil
import sys

import numpy as np
import pytest
from datasets import ClassLabel, List
from gradio_client import Client, handle_file

from conftest import free_port, load_module, load_trainer, run_in_fresh_process, run_script
from shared.args import DataArguments, ModelArguments, RecipeTrainingArguments
from shared.data import label_matrix, label_names, load_labeled_data
from shared.errors import InputError
from shared.inference import ONNX_INT8, TORCH, ModelSpec, load_predictor
from shared.metrics import multi_label_metrics, trainer_compute_metrics
from shared.onnx_export import export_int8
from tiny import load_rows as load

TAGS = ["acting", "complaint", "praise"]  # sorted: the label ids
TEXTS = ["great acting and a wonderful cast", "boring dull plot", "the film was charming but the cast was weak"]


def rows(labels) -> list[dict]:
    return [{"text": f"review number {i}", "label": label} for i, label in enumerate(labels)]


# --- data -------------------------------------------------------------------------------------------------------


def test_a_delimited_column_becomes_label_sets_named_after_train(tmp_path):
    splits = load(tmp_path, rows(["b;a", "c", " a ; c ;", "b"] * 5), label_delimiter=";")

    assert label_names(splits) == ["a", "b", "c"]
    assert splits["train"].features["label"] == List(ClassLabel(names=["a", "b", "c"]))
    # A validation split is carved (at random: label sets cannot be stratified); names stripped, blanks dropped.
    assert len(splits["validation"]) == 2
    everything = list(splits["train"]["label"]) + list(splits["validation"]["label"])
    assert sorted(map(sorted, everything)) == sorted([[0, 1], [2], [0, 2], [1]] * 5)
    assert label_matrix(splits["train"]).shape == (len(splits["train"]), 3)


def test_a_column_of_lists_is_multi_label_without_a_delimiter(tmp_path):
    splits = load(
        tmp_path, rows([["x", "y"], ["y"], ["z", "x"]] * 4), validation=rows([["x"], ["z"]]), suffix=".jsonl"
    )
    assert label_names(splits) == ["x", "y", "z"]
    np.testing.assert_array_equal(label_matrix(splits["validation"]), [[1, 0, 0], [0, 0, 1]])


def test_the_delimiter_with_a_column_of_lists_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"--label_delimiter ';': column 'label' already holds lists; leave the flag"):
        load(tmp_path, rows([["x"], ["y"]] * 4), suffix=".jsonl", label_delimiter=";")


def test_label_sets_are_checked_like_single_labels(tmp_path):
    train = rows(["a;b", "", "b", ";", "a"] * 2)
    test = rows(["a", "b;maybe"])
    with pytest.raises(InputError) as err:
        load(tmp_path, train, validation=rows(["a", "b"]), test=test, label_delimiter=";")
    message = str(err.value)
    assert "train column 'label' must hold one or more label names per text, joined by ';': row 1 has no label, " \
           "row 3 has no label, row 6 has no label, row 8 has no label" in message  # fmt: skip
    with pytest.raises(InputError, match=r"test has labels never seen in train: 'maybe'"):
        load(tmp_path, rows(["a;b", "b", "a"] * 3), validation=rows(["a", "b"]), test=test, label_delimiter=";")


def test_a_list_of_non_names_and_a_label_on_every_text_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"row 1 is \[1, 2\] \(list\)"):
        load(tmp_path, rows([["x"], [1, 2], ["y"]] * 3), suffix=".jsonl")
    with pytest.raises(InputError, match=r"train has 'a' on every text"):
        load(tmp_path, rows(["a;b", "a", "a;c"] * 4), label_delimiter=";")
    with pytest.raises(InputError, match=r"train has a single label \('a'\)"):
        load(tmp_path, rows(["a"] * 6), validation=rows(["a"]), label_delimiter=";")


def test_samples_per_label_picks_k_texts_of_every_label_seeded(tagged_reviews):
    args = DataArguments(
        train_file=tagged_reviews["train"], validation_file=tagged_reviews["validation"],
        text_column_name="review", label_column_name="tags", label_delimiter=";", samples_per_label=4,
    )  # fmt: skip
    first, same = load_labeled_data(args, seed=1), load_labeled_data(args, seed=1)
    on_each = label_matrix(first["train"]).sum(axis=0)
    assert (on_each >= 4).all() and len(first["train"]) <= 12
    assert list(first["train"]["text"]) == list(same["train"]["text"])
    args.samples_per_label = 60
    with pytest.raises(
        InputError, match=r"--samples_per_label 60 needs 60 training texts of each label, but 'acting'"
    ):
        load_labeled_data(args, seed=1)


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--threshold", "1.5"], "error: --threshold 1.5 must lie strictly between 0 and 1"),
        (["--threshold", "0"], "error: --threshold 0.0 must lie strictly between 0 and 1"),
        (["--label_delimiter", ""], "error: --label_delimiter must not be empty"),
    ],
)
def test_bad_multi_label_flags_are_one_line_before_any_work(flags, error, tagged_reviews, tmp_path):
    result = run_script([sys.executable, "trainers/full_finetune.py", "--train_file", tagged_reviews["train"], *flags,
                         "--output_dir", str(tmp_path / "out")])  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [error]


# --- metrics ----------------------------------------------------------------------------------------------------


def test_multi_label_metrics_by_hand():
    labels = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]
    predictions = [[1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 0]]
    # label a: tp 2 -> F1 1; label b: tp 1, fn 1 -> F1 2/3; label c: tp 1, fp 1, fn 1 -> F1 1/2
    # micro: tp 4, fp 1, fn 2 -> F1 8/11; subset accuracy: rows 0 only -> 1/4
    metrics = multi_label_metrics(labels, predictions, ["a", "b", "c"])

    assert metrics["accuracy"] == pytest.approx(1 / 4)
    assert metrics["f1_micro"] == pytest.approx(8 / 11)
    assert metrics["f1_macro"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert metrics["per_class"]["b"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert "confusion_matrix" not in metrics


def test_trainer_metrics_of_a_multi_label_model_threshold_each_sigmoid():
    logits = np.array([[2.0, -1.0, 0.1], [-3.0, 0.5, -0.1]])  # sigmoid: [.88 .27 .52], [.05 .62 .48]
    labels = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    assert trainer_compute_metrics(3, threshold=0.5)((logits, labels))["accuracy"] == 0.5
    assert trainer_compute_metrics(3, threshold=0.45)((logits, labels))["accuracy"] == 1.0


# --- the four methods, end to end -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multi_label_models(tmp_path_factory, tiny_bert, tiny_sentence_transformer, tagged_reviews) -> dict[str, str]:
    """The four methods trained on the tagged reviews: freeze_layers with threshold 0.3, mlm_then_classify and
    SetFit with --class_weight balanced."""
    root = tmp_path_factory.mktemp("multi_label")

    def data(**kwargs) -> DataArguments:
        return DataArguments(
            train_file=tagged_reviews["train"], validation_file=tagged_reviews["validation"],
            test_file=tagged_reviews["test"], text_column_name="review", label_column_name="tags",
            label_delimiter=";", max_seq_length=32, **kwargs,
        )  # fmt: skip

    def args(name: str) -> RecipeTrainingArguments:
        return RecipeTrainingArguments(
            output_dir=str(root / name), max_steps=20, learning_rate=1e-3, per_device_train_batch_size=8,
            report_to="none", save_strategy="no", eval_strategy="no", disable_tqdm=True,
        )  # fmt: skip

    load_trainer("full_finetune").main(ModelArguments(tiny_bert), data(), args("full"))
    freeze = load_trainer("freeze_layers")
    freeze.main(ModelArguments(tiny_bert), data(threshold=0.3), freeze.FreezeArguments(0), args("freeze"))
    mlm = load_trainer("mlm_then_classify")
    mlm.main(ModelArguments(tiny_bert), data(class_weight="balanced"), mlm.MLMArguments(), args("mlm"))
    setfit = load_trainer("setfit_fewshot")
    setfit.main(
        ModelArguments(tiny_sentence_transformer),
        data(samples_per_label=8, class_weight="balanced"),
        setfit.SetFitArguments(num_iterations=2),
        setfit.SetFitTrainingArguments(output_dir=str(root / "setfit"), num_train_epochs=1),
    )
    return {name: str(root / name) for name in ("full", "freeze", "mlm", "setfit")}


def test_every_method_records_a_multi_label_run(multi_label_models):
    for name, folder in multi_label_models.items():
        results = json.load(open(os.path.join(folder, "results.json")))
        assert results["problem_type"] == "multi_label_classification", name
        assert results["threshold"] == (0.3 if name == "freeze" else 0.5)
        assert results["labels"] == TAGS
        assert set(results["metrics"]) == {"accuracy", "f1_micro", "f1_macro", "per_class"}
        assert set(results["metrics"]["per_class"]) == set(TAGS)
        assert results["metrics"]["per_class"]["praise"]["support"] > 0
        card = open(os.path.join(folder, "README.md")).read()
        assert "tag text with any of `acting`, `complaint`, `praise` (multi-label)" in card
        assert f"at least {results['threshold']}" in card and "| F1 (micro) |" in card
    mlm = json.load(open(os.path.join(multi_label_models["mlm"], "results.json")))
    counts, n = mlm["train_label_counts"], mlm["num_train_samples"]
    assert mlm["class_weights"] == pytest.approx({tag: (n - counts[tag]) / counts[tag] for tag in TAGS})  # pos_weight
    for name in ("full", "freeze", "mlm"):
        config = json.load(open(os.path.join(multi_label_models[name], "config.json")))
        assert config["problem_type"] == "multi_label_classification"


def test_plain_pipeline_with_top_k_none_scores_every_label_by_name(multi_label_models):
    for name in ("full", "freeze", "mlm"):
        code = (
            "import sys\nfrom transformers import pipeline\n"
            f"result(pipeline('text-classification', model={multi_label_models[name]!r}, top_k=None)({TEXTS!r}))\n"
        )
        scores = run_in_fresh_process(code)
        assert [sorted(s["label"] for s in row) for row in scores] == [TAGS] * 3
        # Each label's own sigmoid: a multi-label model's scores do not sum to 1.
        assert all(0 < s["score"] < 1 for row in scores for s in row)


def test_plain_setfit_model_loads_the_multi_label_model(multi_label_models):
    code = (
        "from setfit import SetFitModel\n"
        f"model = SetFitModel.from_pretrained({multi_label_models['setfit']!r})\n"
        f"result([model.labels, model.predict({TEXTS!r}).tolist(), model.predict_proba({TEXTS!r}).tolist()])\n"
    )
    labels, predictions, probabilities = run_in_fresh_process(code)
    assert labels == TAGS
    assert np.asarray(predictions).shape == (3, 3)
    np.testing.assert_array_equal(predictions, (np.asarray(probabilities) >= 0.5).astype(int))


def test_the_app_shows_every_label_over_the_threshold_and_scores_multi_label_csvs(multi_label_models, tmp_path):
    app = load_module("space/app.py")
    specs = [ModelSpec(folder) for folder in multi_label_models.values()]
    demo = app.build_demo(app.load_models(specs))
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        answers = client.predict(TEXTS[2], api_name="/compare")
        for answer, name in zip(answers, multi_label_models, strict=True):
            threshold = 0.3 if name == "freeze" else 0.5
            over = [tag for tag in TAGS if answer["scores"][tag] >= threshold]
            assert answer["threshold"] == threshold and answer["labels"] == over
            assert answer["label"] == (";".join(over) or "(none)")

        batch = tmp_path / "batch.csv"
        with open(batch, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows([[TEXTS[0], "praise;acting"], [TEXTS[1], "complaint"], [TEXTS[2], "praise;complaint"]])
        predictions, _download, scores, _plot = client.predict(handle_file(str(batch)), api_name="/batch")
    finally:
        demo.close()
    table = {h: [r[i] for r in predictions["data"]] for i, h in enumerate(predictions["headers"])}
    truth = [{"praise", "acting"}, {"complaint"}, {"praise", "complaint"}]
    for row in scores["data"]:
        model = dict(zip(scores["headers"], row, strict=True))
        predicted = [set(filter(None, cell.split(";"))) for cell in table[model["model"]]]
        correct = sum(p == t for p, t in zip(predicted, truth, strict=True))
        assert model["accuracy"] == pytest.approx(correct / 3, abs=1e-4)
        true_matrix, predicted_matrix = (
            [[int(tag in row) for tag in TAGS] for row in sets] for sets in (truth, predicted)
        )
        expected = multi_label_metrics(true_matrix, predicted_matrix, TAGS)
        assert model["F1"] == pytest.approx(expected["f1_macro"], abs=1e-4)
        assert model["F1 (micro)"] == pytest.approx(expected["f1_micro"], abs=1e-4)


@pytest.mark.parametrize("name", ["full", "setfit"])
def test_the_int8_files_of_a_multi_label_model_score_each_label_on_its_own(name, multi_label_models, tmp_path):
    folder = str(tmp_path / name)
    shutil.copytree(multi_label_models[name], folder)
    export_int8(folder)
    fast, plain = load_predictor(ModelSpec(folder)), load_predictor(ModelSpec(multi_label_models[name]))

    assert (fast.backend, plain.backend) == (ONNX_INT8, TORCH)
    for a, b in zip(fast.predict(TEXTS), plain.predict(TEXTS), strict=True):
        # int8 moves a probability by a few hundredths on the tiny models (as in test_onnx.py)
        assert a.scores == pytest.approx(b.scores, abs=0.05)
        assert sum(a.scores.values()) != pytest.approx(1.0, abs=1e-3)  # sigmoids, not a softmax
