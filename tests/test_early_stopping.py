"""--early_stopping_patience: one flag for all four methods. Training stops once validation stops improving, the
model holds the best evaluation's weights, and results.json and the card say where it stopped and which step it
kept; what the flag needs is checked before anything loads."""

import csv
import json
import os
import shutil
import sys
from dataclasses import replace
from functools import partial

import pytest
from safetensors.torch import load_file

from conftest import ROOT, load_trainer, model_args_for, run_script
from shared.args import parse_cli
from shared.errors import InputError

full_finetune = load_trainer("full_finetune")
setfit_fewshot = load_trainer("setfit_fewshot")
mlm_then_classify = load_trainer("mlm_then_classify")


@pytest.fixture(scope="module")
def plateau(tmp_path_factory) -> str:
    """A validation split on which no model can ever improve: one text, half of it labeled each way, so every model
    predicts the same label for all of it and scores accuracy 0.5."""
    path = tmp_path_factory.mktemp("plateau") / "validation.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        writer.writerows([["the movie was a film", label] for label in ("negative", "positive") * 8])
    return str(path)


def test_stops_before_the_last_epoch_and_keeps_the_best_steps_weights(tiny_bert, reviews, plateau, tmp_path):
    out = tmp_path / "run"
    result = run_script(
        [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "-q", "--config_file",
         os.path.join(ROOT, "accelerate_config.yaml"), "trainers/full_finetune.py", "--model_name_or_path", tiny_bert,
         "--train_file", reviews["train"], "--validation_file", plateau, "--test_file", reviews["test"],
         "--text_column_name", "review", "--label_column_name", "sentiment", "--per_device_train_batch_size", "8",
         "--learning_rate", "1e-3", "--num_train_epochs", "4", "--early_stopping_patience", "1",
         "--metric_for_best_model", "accuracy", "--output_dir", str(out)]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    # 48 examples in batches of 8: 6 steps an epoch, evaluated after each. Epoch 1 is the best; epoch 2 does not
    # improve on it, so training stops there, 2 epochs before its end, and keeps epoch 1's weights.
    stopping = json.loads((out / "results.json").read_text())["early_stopping"]
    assert stopping == {"patience": 1, "metric": "accuracy", "best_metric": 0.5, "best_step": 6,
                        "stopped_at_step": 12, "max_steps": 24, "stopped_early": True}  # fmt: skip
    final = load_file(out / "model.safetensors")
    best = load_file(out / "checkpoint-6" / "model.safetensors")
    last = load_file(out / "checkpoint-12" / "model.safetensors")
    assert all((final[name] == best[name]).all() for name in best)
    assert any((final[name] != last[name]).any() for name in last)  # training did move the weights after step 6
    card = (out / "README.md").read_text()
    assert "Early stopping: stopped early, at step 12 of 24" in card and "the weights of step 6, the best" in card


def test_setfit_stops_on_its_bodys_validation_loss_and_keeps_the_best_body(
    tiny_sentence_transformer, data_args, tmp_path
):
    data_args.samples_per_label = 8
    # 16 examples x 4 iterations x 2 = 128 pairs in batches of 8: 16 steps an epoch, evaluated every 4. At this
    # learning rate the body overfits the few examples within 2 epochs: the validation loss turns up again.
    training = setfit_fewshot.SetFitTrainingArguments(
        output_dir=str(tmp_path / "setfit"), num_train_epochs=2, learning_rate=5e-3, per_device_train_batch_size=8,
        eval_strategy="steps", eval_steps=4, early_stopping_patience=1,
    )  # fmt: skip
    results = setfit_fewshot.main(
        model_args_for(tiny_sentence_transformer),
        data_args,
        setfit_fewshot.SetFitArguments(num_iterations=4),
        training,
    )
    stopping = results["early_stopping"]
    assert stopping["metric"] == "embedding_loss" and stopping["max_steps"] == 32
    assert stopping["best_step"] < stopping["stopped_at_step"] < 32 and stopping["stopped_early"]
    out = tmp_path / "setfit"
    final = load_file(out / "model.safetensors")
    best = load_file(out / f"checkpoint-{stopping['best_step']}" / "model.safetensors")
    last = load_file(out / f"checkpoint-{stopping['stopped_at_step']}" / "model.safetensors")
    assert all((final[name] == best[name]).all() for name in best)
    assert any((final[name] != last[name]).any() for name in last)
    assert json.loads((out / "results.json").read_text())["early_stopping"] == stopping
    assert f"stopped early, at step {stopping['stopped_at_step']} of 32" in (out / "README.md").read_text()


def test_a_resumed_setfit_run_goes_on_counting_evaluations_without_improvement(
    tiny_sentence_transformer, data_args, tmp_path
):
    """setfit does not pass restore_callback_states_from_checkpoint on to its inner Trainer: a resumed SetFit run
    was granted its patience afresh."""
    data_args.samples_per_label = 8
    training = setfit_fewshot.SetFitTrainingArguments(
        output_dir=str(tmp_path / "setfit"), num_train_epochs=3, learning_rate=5e-3, per_device_train_batch_size=8,
        eval_strategy="steps", eval_steps=4, early_stopping_patience=2,
    )  # fmt: skip
    run = partial(setfit_fewshot.main, model_args_for(tiny_sentence_transformer), data_args,
                  setfit_fewshot.SetFitArguments(num_iterations=4))  # fmt: skip
    first = run(training)
    whole, whole_pairs = first["early_stopping"], first["method_details"]["pairs_seen"]
    assert whole["stopped_early"] and whole["stopped_at_step"] == whole["best_step"] + 8, whole

    # Stopped after the first evaluation without improvement: the next one stops the resumed run, as above.
    out = tmp_path / "setfit"
    shutil.rmtree(out / f"checkpoint-{whole['stopped_at_step']}")
    os.remove(out / "model.safetensors")
    resumed = run(replace(training, resume_from_checkpoint="latest"))
    assert resumed["early_stopping"] == whole
    # It went on from its checkpoint: a run started over would stop where the whole one did, too.
    assert resumed["method_details"]["pairs_seen"] < whole_pairs


def test_mlm_then_classify_stops_its_classifier_only(tiny_bert, data_args, plateau, training_args):
    data_args.validation_file = plateau
    training_args.max_steps, training_args.eval_strategy, training_args.eval_steps = 12, "steps", 3
    training_args.early_stopping_patience, training_args.metric_for_best_model = 1, "accuracy"
    results = mlm_then_classify.main(model_args_for(tiny_bert), data_args, mlm_then_classify.MLMArguments(),
                                     training_args)  # fmt: skip
    assert results["early_stopping"]["stopped_at_step"] == 6 and results["early_stopping"]["best_step"] == 3
    assert results["method_details"]["perplexity_after"] is not None  # the masked-LM phase ran its length


def test_a_resumed_run_goes_on_counting_evaluations_without_improvement(tiny_bert, data_args, plateau, training_args):
    """The patience a run used up before it was stopped is not granted again when it resumes."""
    data_args.validation_file = plateau
    training_args.max_steps, training_args.eval_strategy, training_args.eval_steps = 12, "steps", 3
    training_args.early_stopping_patience, training_args.metric_for_best_model = 2, "accuracy"
    whole = full_finetune.main(model_args_for(tiny_bert), data_args, replace(training_args))
    # Evaluations at steps 3 (the best), 6 and 9 (no better): the second without improvement stops the run.
    assert whole["early_stopping"]["stopped_at_step"] == 9 and whole["early_stopping"]["best_step"] == 3

    # Stopped after step 6, one evaluation without improvement counted: the next one stops it, as above. The best
    # step's weights are loaded from its checkpoint in this folder, where the resumed run's state says they are.
    out = training_args.output_dir
    shutil.rmtree(os.path.join(out, "checkpoint-9"))
    os.remove(os.path.join(out, "model.safetensors"))
    resumed = full_finetune.main(model_args_for(tiny_bert), data_args,
                                 replace(training_args, resume_from_checkpoint="latest"))  # fmt: skip

    assert resumed["early_stopping"] == whole["early_stopping"]
    final = load_file(os.path.join(out, "model.safetensors"))
    best = load_file(os.path.join(out, "checkpoint-3", "model.safetensors"))
    assert all((final[name] == best[name]).all() for name in best)


@pytest.mark.parametrize(
    ("trainer", "flags", "errors"),
    [
        ("full_finetune", ["--eval_strategy", "no"], ["needs evaluations during training, but --eval_strategy is no"]),
        ("full_finetune", ["--metric_for_best_model", "f2", "--save_strategy", "steps", "--save_steps", "5",
                           "--eval_strategy", "steps", "--eval_steps", "2"],
         ["--metric_for_best_model f2: not a metric of this method; use one of f1, f1_macro, f1_micro, accuracy, loss",
          "--save_strategy steps does not save at every evaluation (--eval_strategy steps, --eval_steps 2, "
          "--save_steps 5)"]),
        ("full_finetune", ["--early_stopping_patience", "0"], ["--early_stopping_patience 0: must be 1 or more"]),
        ("setfit_fewshot", ["--metric_for_best_model", "f1"],
         ["needs evaluations during training, but --eval_strategy is no",
          "--metric_for_best_model f1: not a metric of this method; use one of embedding_loss"]),
    ],
)  # fmt: skip
def test_what_early_stopping_needs_is_one_error_before_anything_loads(trainer, flags, errors):
    module = load_trainer(trainer)
    with pytest.raises(InputError) as raised:
        parse_cli(module.ARGUMENTS, "", ["--early_stopping_patience", "2", *flags, "--output_dir", "unused"])
    for error in errors:
        assert error in str(raised.value)


def test_without_the_flag_training_runs_its_length(tiny_bert, data_args, training_args):
    results = full_finetune.main(model_args_for(tiny_bert), data_args, training_args)
    assert results["early_stopping"] is None
    assert not [e for e in os.listdir(training_args.output_dir) if e.startswith("checkpoint-")]
