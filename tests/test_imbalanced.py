"""Imbalanced data: --class_weight weighs the loss of every method, the data check points at it, the card shows
what it did; on a 9:1 set it raises the recall of the rare class."""

import json
import logging
import os
import sys

import pytest
import torch
import yaml

from conftest import load_trainer, run_script
from shared.args import DataArguments, ModelArguments, RecipeTrainingArguments, parse_class_weight, parse_cli
from shared.classification import weighted_loss
from shared.data import class_weights, load_labeled_data
from shared.errors import InputError


def imbalanced_data(files: dict[str, str], **kwargs) -> DataArguments:
    return DataArguments(
        train_file=files["train"], validation_file=files["validation"], test_file=files["test"],
        text_column_name="review", label_column_name="sentiment", max_seq_length=32, **kwargs,
    )  # fmt: skip


def test_balanced_is_inverse_frequency_and_names_set_their_own_weight(imbalanced_reviews):
    splits = load_labeled_data(imbalanced_data(imbalanced_reviews), seed=0)  # 176 negative, 19 positive
    assert class_weights(splits, "balanced") == pytest.approx([195 / (2 * 176), 195 / (2 * 19)])
    assert class_weights(splits, "positive=4") == [1.0, 4.0]  # a label not named weighs 1
    assert class_weights(splits, '{"negative": 0.5, "positive": 3}') == [0.5, 3.0]  # a config file's mapping
    assert class_weights(splits, None) is None


def test_a_config_file_maps_label_names_to_weights(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"class_weight": {"spam": 5, "ham": 1}, "output_dir": str(tmp_path / "o")}))
    _, data_args, _ = parse_cli([ModelArguments, DataArguments, RecipeTrainingArguments], "", [str(config)])
    assert parse_class_weight(data_args.class_weight) == {"spam": 5.0, "ham": 1.0}


def test_an_unknown_label_name_is_named_with_the_labels_there_are(imbalanced_reviews):
    with pytest.raises(InputError, match=r"--class_weight: unknown label name 'postive'; the labels are 'negative', "):
        load_labeled_data(imbalanced_data(imbalanced_reviews, class_weight="postive=3"), seed=0)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("positive=-1", "error: --class_weight: the weight of 'positive' is '-1', not a positive number"),
        ("positive=lots", "error: --class_weight: the weight of 'positive' is 'lots', not a positive number"),
        ("positive", "error: --class_weight 'positive': use 'balanced' or label=weight pairs, e.g. 'spam=5,ham=1'"),
    ],
)
def test_a_bad_weight_is_one_line_before_any_work(value, error, imbalanced_reviews, tmp_path):
    result = run_script([sys.executable, "trainers/setfit_fewshot.py", "--train_file", imbalanced_reviews["train"],
                         "--class_weight", value, "--output_dir", str(tmp_path / "out")])  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [error]


def test_the_data_check_warns_of_a_rare_label_and_names_the_flag(imbalanced_reviews, data_args, caplog):
    with caplog.at_level(logging.WARNING, logger="shared.data"):
        load_labeled_data(imbalanced_data(imbalanced_reviews), seed=0)
    assert [r.getMessage() for r in caplog.records] == [
        "the labels are imbalanced: 'positive' is on 19 of 195 training texts (9.7%); --class_weight balanced "
        "weighs the loss against it"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shared.data"):
        load_labeled_data(imbalanced_data(imbalanced_reviews, class_weight="balanced"), seed=0)
        load_labeled_data(data_args, seed=0)  # balanced reviews
    assert caplog.records == []


def test_the_trainer_loss_weighs_each_example_by_its_label():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    plain = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    loss = weighted_loss([0.5, 4.0], multi_label=False)({"logits": logits}, labels, num_items_in_batch=3)
    assert loss.item() == pytest.approx(((0.5 * plain[0] + 4.0 * plain[1] + 4.0 * plain[2]) / 3).item())
    # Multi-label: a label's weight multiplies the loss of its positives only (BCE's pos_weight).
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = weighted_loss([3.0, 1.0], multi_label=True)({"logits": logits[:2]}, targets, num_items_in_batch=4)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:2], targets, pos_weight=torch.tensor([3.0, 1.0]), reduction="sum"
    )
    assert loss.item() == pytest.approx(expected.item() / 4)


def recall_of_positive(results: dict) -> float:
    return results["metrics"]["per_class"]["positive"]["recall"]


def test_weights_reach_the_trainers_loss_and_raise_the_rare_labels_recall(tiny_bert, imbalanced_reviews, tmp_path):
    """The tiny random encoder learns too little in a few steps to tell the labels apart, so `balanced` leaves it
    at a coin flip between them; a heavy weight on the rare label shows the weights reaching the Trainer's loss.
    (SetFit's heads below do learn, and show what `balanced` does.)"""
    full_finetune = load_trainer("full_finetune")
    recalls = {}
    for class_weight in (None, "positive=20"):
        args = RecipeTrainingArguments(
            output_dir=str(tmp_path / str(class_weight)), max_steps=30, learning_rate=1e-3,
            per_device_train_batch_size=8, report_to="none", save_strategy="no", eval_strategy="no", seed=7,
            disable_tqdm=True, bf16=False,  # in bf16 these 30 steps of a tiny random encoder learn nothing either way
        )  # fmt: skip
        data = imbalanced_data(imbalanced_reviews, class_weight=class_weight)
        results = full_finetune.main(ModelArguments(tiny_bert), data, args)
        recalls[class_weight] = recall_of_positive(results)
    assert recalls["positive=20"] > recalls[None]
    assert results["class_weights"] == {"negative": 1.0, "positive": 20.0}
    card = open(os.path.join(args.output_dir, "README.md")).read()
    assert "The training labels are imbalanced: `positive` is on 19 of 195 texts (9.7%)" in card
    assert "The loss was weighted per label: `negative` 1, `positive` 20." in card
    assert "| positive |" in card  # the per-class F1 it points at


@pytest.mark.parametrize("head_type", ["logistic", "differentiable"])
def test_balanced_weights_raise_the_rare_labels_recall_in_setfit(
    head_type, tiny_sentence_transformer, imbalanced_reviews, tmp_path
):
    setfit_fewshot = load_trainer("setfit_fewshot")
    recalls = {}
    for class_weight in (None, "balanced"):
        # All 200 training texts, not 16 of each label: the imbalance is the point.
        data = imbalanced_data(imbalanced_reviews, class_weight=class_weight, samples_per_label=None)
        training = setfit_fewshot.SetFitTrainingArguments(
            output_dir=str(tmp_path / str(class_weight)), num_train_epochs=1, max_steps=1
        )
        args = setfit_fewshot.SetFitArguments(
            num_iterations=1, head_type=head_type, head_num_epochs=16, head_learning_rate=0.1
        )
        results = setfit_fewshot.main(ModelArguments(tiny_sentence_transformer), data, args, training)
        recalls[class_weight] = recall_of_positive(results)
    assert recalls["balanced"] > recalls[None]
    unweighted = open(os.path.join(tmp_path / "None", "README.md")).read()
    assert "`--class_weight balanced` would weigh it against the imbalance" in unweighted
    weights = json.load(open(os.path.join(training.output_dir, "results.json")))["class_weights"]
    assert weights == pytest.approx({"negative": 195 / 352, "positive": 195 / 38})
