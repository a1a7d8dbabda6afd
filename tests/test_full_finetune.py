"""trainers/full_finetune.py end to end on tiny local encoders: in-process through main(), and under
`accelerate launch` as a user runs it."""

import json
import os
import re
import shutil
import sys

import pytest
from safetensors.torch import load_file

from conftest import accelerate_launch, load_trainer, model_args_for, predict_in_fresh_process, run_script
from shared.errors import InputError
from tiny import FAMILIES

full_finetune = load_trainer("full_finetune")

RESULT_KEYS = {
    "method", "base_model", "dataset", "num_train_samples", "metrics", "train_runtime_s",
    "train_samples_per_second", "trainable_params", "total_params", "peak_memory_mb", "device", "seed", "versions",
}  # fmt: skip


def test_main_writes_model_tokenizer_card_and_results(tiny_bert, data_args, training_args):
    results = full_finetune.main(model_args_for(tiny_bert), data_args, training_args)

    out = training_args.output_dir
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "results.json"} <= set(os.listdir(out))
    assert not any(name.endswith((".bin", ".pt", ".pth")) and name != "training_args.bin" for name in os.listdir(out))
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}

    saved = json.load(open(os.path.join(out, "results.json")))
    assert saved == json.loads(json.dumps(results))
    assert RESULT_KEYS <= set(saved)
    assert saved["method"] == "full_finetune" and saved["num_train_samples"] == 48 and saved["seed"] == 7
    assert saved["eval_split"] == "test" and saved["trainable_params"] == saved["total_params"] > 0
    assert set(saved["metrics"]) >= {"accuracy", "f1_macro", "f1", "per_class", "confusion_matrix"}
    assert sum(map(sum, saved["metrics"]["confusion_matrix"])) == 16  # the 16 test rows
    assert saved["device"] == "cpu" and saved["peak_memory_mb"] > 0 and saved["versions"]["transformers"]

    card = open(os.path.join(out, "README.md")).read()
    assert "pipeline_tag: text-classification" in card and "model-index:" in card
    assert f"value: {round(saved['metrics']['accuracy'], 4)}" in card
    assert "full finetune" in card and "Training time" in card and "Trainable parameters" in card


@pytest.mark.parametrize("family", FAMILIES)
def test_each_encoder_family_trains(family, tiny_encoders, data_args, training_args):
    base = load_file(os.path.join(tiny_encoders[family], "model.safetensors"))

    results = full_finetune.main(model_args_for(tiny_encoders[family]), data_args, training_args)

    tuned = load_file(os.path.join(training_args.output_dir, "model.safetensors"))
    shared_names = [name for name in tuned if name in base]
    assert shared_names, "the classifier should share the encoder's parameter names"
    changed = [name for name in shared_names if not (tuned[name] == base[name]).all()]
    assert len(changed) > len(shared_names) / 2, "full fine-tuning should update the encoder's weights"
    assert results["trainable_params"] == results["total_params"]


def test_bad_data_fails_before_the_model_is_loaded(data_args, training_args):
    data_args.label_column_name = "stars"
    # The model path does not exist either: the data error must come first, and nothing be written.
    with pytest.raises(InputError, match="no column 'stars'"):
        full_finetune.main(model_args_for("/nonexistent/model"), data_args, training_args)
    assert not os.path.exists(training_args.output_dir)


def test_a_missing_model_is_one_clear_error(data_args, training_args):
    with pytest.raises(InputError, match="could not load '/nonexistent/model'"):
        full_finetune.main(model_args_for("/nonexistent/model"), data_args, training_args)


def test_an_encoder_folder_without_its_tokenizer_files_is_refused_before_training(
    tiny_bert, data_args, training_args, tmp_path
):
    # transformers 5 would build a tokenizer of special tokens only, and train on [UNK] for every word.
    encoder = shutil.copytree(tiny_bert, tmp_path / "weights-only")
    for name in os.listdir(encoder):
        if name.startswith(("tokenizer", "vocab", "special_tokens")):
            os.remove(encoder / name)
    with pytest.raises(InputError, match="it has no tokenizer files"):
        full_finetune.main(model_args_for(str(encoder)), data_args, training_args)
    assert not os.path.exists(os.path.join(training_args.output_dir, "model.safetensors"))


def test_accelerate_launch_then_plain_pipeline_in_a_fresh_process(tiny_bert, reviews, tmp_path):
    out = str(tmp_path / "launched")
    result = accelerate_launch(
        "trainers/full_finetune.py",
        "--model_name_or_path", tiny_bert,
        "--train_file", reviews["train"], "--validation_file", reviews["validation"], "--test_file", reviews["test"],
        "--text_column_name", "review", "--label_column_name", "sentiment",
        "--output_dir", out, "--max_steps", "4", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["hyperparameters"]["learning_rate"] == 1e-3 and results["num_train_samples"] == 48

    predictions = predict_in_fresh_process(out, ["the movie was great fun", "dull and boring plot"])
    assert len(predictions) == 2
    assert {p["label"] for p in predictions} <= {"negative", "positive"}
    assert all(0 <= p["score"] <= 1 for p in predictions)


def test_cli_bad_input_is_one_error_line_not_a_traceback(reviews, tiny_bert, tmp_path):
    result = run_script(
        [sys.executable, "trainers/full_finetune.py", "--model_name_or_path", tiny_bert,
         "--train_file", reviews["train"], "--text_column_name", "body", "--output_dir", str(tmp_path / "x")]
    )  # fmt: skip
    assert result.returncode == 2
    assert "error:" in result.stderr and "no column 'body' (--text_column_name)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_help_shows_the_launch_command_and_the_book_defaults():
    result = run_script([sys.executable, "trainers/full_finetune.py", "--help"])
    assert result.returncode == 0
    assert "accelerate launch -q --config_file accelerate_config.yaml trainers/full_finetune.py \\" in result.stdout
    for flag in ("--model_name_or_path", "--dataset_name", "--train_file", "--text_column_name", "--samples_per_label",
                 "--push_to_hub", "--hub_model_id", "--hub_private_repo", "--num_train_epochs", "--bf16"):  # fmt: skip
        assert flag in result.stdout


def test_cli_defaults_reproduce_the_book_recipe():
    result = run_script([sys.executable, "trainers/full_finetune.py", "--help"])
    options = " ".join(result.stdout.split()).split("options:", 1)[1]  # the flags' section, unwrapped

    def default(flag: str) -> str:
        return re.search(rf"--{flag}\b.*?\(default: ([^)]*)\)", options)[1]

    assert default("model_name_or_path") == "bert-base-cased"
    assert "given either, is rotten_tomatoes" in options  # --dataset_name's default when no --train_file is given
    assert default("learning_rate") == "2e-05" and default("per_device_train_batch_size") == "16"
    assert default("num_train_epochs") == "1.0" and default("weight_decay") == "0.01"
    assert default("train_sampling_strategy") == "group_by_length"
    assert default("output_dir") == "outputs/full_finetune"
