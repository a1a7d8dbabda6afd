"""trainers/freeze_layers.py: exactly which parameters train for each encoder family, and that frozen ones
come out of training bit-identical."""

import json
import os

import pytest
from safetensors.torch import load_file

from conftest import USER, accelerate_launch, load_trainer, model_args_for
from shared.classification import load_classifier
from shared.errors import InputError

freeze_layers = load_trainer("freeze_layers")

# What stays trainable when every block is frozen: the head, with the pooler where the family has one.
HEADS = {
    "bert": ["bert.pooler.dense", "classifier"],
    "roberta": ["classifier.dense", "classifier.out_proj"],
    "distilbert": ["pre_classifier", "classifier"],
    "mpnet": ["classifier.dense", "classifier.out_proj"],
    "deberta-v2": ["pooler.dense", "classifier"],
}
# Where each family keeps transformer block 1 (the last of the tiny models' two).
LAST_BLOCK = {
    "bert": "bert.encoder.layer.1.",
    "roberta": "roberta.encoder.layer.1.",
    "distilbert": "distilbert.transformer.layer.1.",
    "mpnet": "mpnet.encoder.layer.1.",
    "deberta-v2": "deberta.encoder.layer.1.",
}


def trainable_names(model) -> set[str]:
    return {name for name, param in model.named_parameters() if param.requires_grad}


@pytest.mark.parametrize("family", HEADS)
def test_freezing_every_block_leaves_exactly_the_head(family, tiny_encoders):
    model = load_classifier(tiny_encoders[family], "main", ["negative", "positive"])
    freeze_layers.freeze_lower_layers(model, num_frozen_layers=2)
    expected = {f"{module}.{kind}" for module in HEADS[family] for kind in ("weight", "bias")}
    assert trainable_names(model) == expected


@pytest.mark.parametrize("family", HEADS)
def test_freezing_one_block_trains_the_block_above_and_the_head(family, tiny_encoders):
    model = load_classifier(tiny_encoders[family], "main", ["negative", "positive"])
    all_names = {name for name, _ in model.named_parameters()}
    freeze_layers.freeze_lower_layers(model, num_frozen_layers=1)
    head = {f"{module}.{kind}" for module in HEADS[family] for kind in ("weight", "bias")}
    block = {name for name in all_names if name.startswith(LAST_BLOCK[family])}
    assert block and trainable_names(model) == head | block


@pytest.mark.parametrize("family", HEADS)
def test_after_training_frozen_weights_are_bit_identical_and_the_rest_moved(
    family, tiny_encoders, data_args, training_args
):
    base = load_file(os.path.join(tiny_encoders[family], "model.safetensors"))

    results = freeze_layers.main(
        model_args_for(tiny_encoders[family]), data_args, freeze_layers.FreezeArguments(1), training_args
    )

    tuned = load_file(os.path.join(training_args.output_dir, "model.safetensors"))
    in_base = [name for name in tuned if name in base]
    frozen = [name for name in in_base if not name.startswith(LAST_BLOCK[family])]
    trained = [name for name in in_base if name.startswith(LAST_BLOCK[family])]
    assert frozen and trained
    assert all((tuned[name] == base[name]).all() for name in frozen)
    assert all(not (tuned[name] == base[name]).all() for name in trained if not name.endswith("bias")), (
        "every weight matrix of the trainable block should have moved"
    )
    assert 0 < results["trainable_params"] < results["total_params"]
    assert results["method_details"]["num_frozen_layers"] == 1 and results["method_details"]["num_layers"] == 2


def test_counts_and_card_state_what_was_frozen(tiny_bert, data_args, training_args):
    results = freeze_layers.main(model_args_for(tiny_bert), data_args, freeze_layers.FreezeArguments(), training_args)

    # Head only: BERT's pooler (32x32 + 32) and the classifier (32x2 + 2).
    assert results["trainable_params"] == 32 * 32 + 32 + 32 * 2 + 2
    assert results["method_details"]["num_frozen_layers"] == 2
    card = open(os.path.join(training_args.output_dir, "README.md")).read()
    assert "all 2 encoder blocks are frozen; only the head trains" in card
    assert "Trainable parameters: 1,122 of" in card


@pytest.mark.parametrize("bad", [3, -1])
def test_out_of_range_layer_count_names_the_models_layers_before_training(bad, tiny_bert, data_args, training_args):
    with pytest.raises(InputError, match=rf"--num_frozen_layers {bad} is out of range: .* has 2 layers, so use 0..2"):
        freeze_layers.main(model_args_for(tiny_bert), data_args, freeze_layers.FreezeArguments(bad), training_args)
    assert not os.path.exists(training_args.output_dir)


def test_accelerate_launch(tiny_encoders, reviews, tmp_path):
    out = str(tmp_path / "frozen")
    result = accelerate_launch(
        "trainers/freeze_layers.py",
        "--model_name_or_path", tiny_encoders["roberta"], "--num_frozen_layers", "1",
        "--train_file", reviews["train"], "--test_file", reviews["test"],
        "--text_column_name", "review", "--label_column_name", "sentiment",
        "--output_dir", out, "--max_steps", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["method"] == "freeze_layers" and results["eval_split"] == "test"
    assert results["method_details"]["num_frozen_layers"] == 1
    assert "froze" in result.stderr  # the log line with the trainable count


def test_publishes_to_the_hub(hub, tiny_bert, data_args, training_args):
    training_args.push_to_hub, training_args.hub_model_id = True, f"{USER}/head-only"

    freeze_layers.main(model_args_for(tiny_bert), data_args, freeze_layers.FreezeArguments(), training_args)

    commits = hub.state.repo(f"{USER}/head-only").commits
    assert len(commits) == 1
    assert b"only the head trains" in commits[0].files["README.md"]
    assert json.loads(commits[0].files["results.json"])["method"] == "freeze_layers"
