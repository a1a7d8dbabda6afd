"""trainers/mlm_then_classify.py: masked-LM adaptation with perplexity before and after, a fill-mask encoder,
then a classifier on it; each phase alone; both published to their own repos."""

import json
import math
import os

import pytest
from huggingface_hub import HfApi

from conftest import (
    TOKEN,
    USER,
    accelerate_launch,
    load_trainer,
    model_args_for,
    predict_in_fresh_process,
    run_in_fresh_process,
)
from shared.args import ModelArguments
from shared.errors import InputError

mlm_then_classify = load_trainer("mlm_then_classify")


@pytest.fixture
def mlm_training_args(training_args):
    training_args.max_steps = 30  # enough for the tiny encoder's perplexity to fall whatever its weights
    return training_args


def fill_mask_in_fresh_process(model: str, text: str) -> list[dict]:
    code = (
        "from transformers import pipeline\n"
        f"fill = pipeline('fill-mask', model={model!r})\n"
        f"result(fill({text!r}.replace('[MASK]', fill.tokenizer.mask_token)))\n"
    )
    return run_in_fresh_process(code)


def test_both_phases(tiny_bert, data_args, mlm_training_args):
    results = mlm_then_classify.main(
        model_args_for(tiny_bert), data_args, mlm_then_classify.MLMArguments(), mlm_training_args
    )

    out = mlm_training_args.output_dir
    details = results["method_details"]
    assert math.isfinite(details["perplexity_before"]) and math.isfinite(details["perplexity_after"])
    assert details["perplexity_after"] < details["perplexity_before"]
    assert details["mlm_texts"] == 48 and details["adapted_encoder"] == "mlm"  # beside the model
    assert results["method"] == "mlm_then_classify" and results["base_model"] == "bert"  # the folder's name
    assert results["train_runtime_s"] > details["mlm_runtime_s"] > 0  # the cost counts both phases

    assert {"model.safetensors", "README.md", "results.json"} <= set(os.listdir(out))
    encoder_card = open(os.path.join(out, "mlm", "README.md")).read()
    assert "pipeline_tag: fill-mask" in encoder_card
    assert f"| before adaptation | {details['perplexity_before']:.2f} |" in encoder_card
    assert "perplexity" in open(os.path.join(out, "README.md")).read()

    candidates = fill_mask_in_fresh_process(os.path.join(out, "mlm"), "the movie was [MASK]")
    assert len(candidates) == 5 and all(c["token_str"] for c in candidates)


def test_whole_word_masking_and_an_unlabeled_file(tiny_bert, data_args, mlm_training_args, tmp_path):
    extra = tmp_path / "unlabeled.txt"
    extra.write_text("the plot was superb\n\nthe cast was weak and tedious\nit was a fun film\n")
    args = mlm_then_classify.MLMArguments(whole_word_masking=True, unlabeled_file=str(extra))

    results = mlm_then_classify.main(model_args_for(tiny_bert), data_args, args, mlm_training_args)

    assert results["method_details"]["mlm_texts"] == 48 + 3  # the blank line is skipped
    assert results["hyperparameters"]["whole_word_masking"] is True


def test_mlm_phase_alone_then_classify_alone(tiny_bert, data_args, mlm_training_args, tmp_path):
    mlm_only = mlm_then_classify.MLMArguments(phase="mlm")
    assert mlm_then_classify.main(model_args_for(tiny_bert), data_args, mlm_only, mlm_training_args) is None
    encoder = os.path.join(mlm_training_args.output_dir, "mlm")
    assert "model.safetensors" in os.listdir(encoder)
    assert not os.path.exists(os.path.join(mlm_training_args.output_dir, "results.json"))

    mlm_training_args.output_dir = str(tmp_path / "classifier")
    classify_only = mlm_then_classify.MLMArguments(phase="classify")
    results = mlm_then_classify.main(model_args_for(encoder), data_args, classify_only, mlm_training_args)

    assert results["method_details"]["adapted_encoder"] == "mlm"  # the given encoder, by its folder name
    assert results["method_details"]["perplexity_before"] is None
    assert not os.path.exists(os.path.join(mlm_training_args.output_dir, "mlm"))


def test_bad_unlabeled_file_fails_before_any_model(data_args, mlm_training_args, tmp_path):
    args = mlm_then_classify.MLMArguments(unlabeled_file=str(tmp_path / "missing.txt"))
    with pytest.raises(InputError, match="--unlabeled_file .*missing.txt does not exist"):
        mlm_then_classify.main(model_args_for("/nonexistent/model"), data_args, args, mlm_training_args)


@pytest.mark.parametrize("name, content", [("empty.txt", ""), ("header.csv", "text\n")])
def test_an_unlabeled_file_without_rows_is_named(data_args, mlm_training_args, tmp_path, name, content):
    (tmp_path / name).write_text(content)
    args = mlm_then_classify.MLMArguments(unlabeled_file=str(tmp_path / name))
    with pytest.raises(InputError, match=f"--unlabeled_file .*{name} has no rows"):
        mlm_then_classify.main(model_args_for("nobody/never-loaded"), data_args, args, mlm_training_args)


def test_publishes_the_encoder_and_the_classifier_to_their_own_repos(hub, tiny_bert, data_args, mlm_training_args):
    mlm_training_args.push_to_hub, mlm_training_args.hub_model_id = True, f"{USER}/adapted"

    mlm_then_classify.main(model_args_for(tiny_bert), data_args, mlm_then_classify.MLMArguments(), mlm_training_args)

    encoder, classifier = hub.state.repo(f"{USER}/adapted-mlm"), hub.state.repo(f"{USER}/adapted")
    assert len(encoder.commits) == 1 and len(classifier.commits) == 1
    assert {"model.safetensors", "config.json", "README.md"} <= set(encoder.commits[0].files)
    assert b"pipeline_tag: fill-mask" in encoder.commits[0].files["README.md"]
    assert not [path for path in classifier.commits[0].files if path.startswith("mlm/")]
    published = json.loads(classifier.commits[0].files["results.json"])
    assert published["method"] == "mlm_then_classify"
    assert published["method_details"]["adapted_encoder"] == f"{USER}/adapted-mlm"


def test_accelerate_launch_and_the_classifier_loads_with_pipeline(tiny_bert, reviews, tmp_path):
    out = str(tmp_path / "launched")
    result = accelerate_launch(
        "trainers/mlm_then_classify.py",
        "--model_name_or_path", tiny_bert,
        "--train_file", reviews["train"], "--validation_file", reviews["validation"], "--test_file", reviews["test"],
        "--text_column_name", "review", "--label_column_name", "sentiment", "--samples_per_label", "8",
        "--output_dir", out, "--max_steps", "4", "--learning_rate", "1e-3", "--mlm_probability", "0.3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "masked-LM perplexity on held-out text" in result.stderr
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["num_train_samples"] == 16 and results["method_details"]["mlm_texts"] == 48
    assert results["hyperparameters"]["mlm_probability"] == 0.3

    predictions = predict_in_fresh_process(out, ["great fun film"])
    assert predictions[0]["label"] in {"negative", "positive"}


def test_classify_alone_honours_the_encoders_revision(hub, tiny_bert, data_args, mlm_training_args):
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(f"{USER}/encoder")
    first = api.upload_folder(repo_id=f"{USER}/encoder", folder_path=tiny_bert).oid
    api.upload_file(path_or_fileobj=b"a later commit", path_in_repo="NOTES.md", repo_id=f"{USER}/encoder")

    model_args = ModelArguments(f"{USER}/encoder", model_revision=first)
    mlm_then_classify.main(model_args, data_args, mlm_then_classify.MLMArguments(phase="classify"), mlm_training_args)

    downloads = [path for method, path in hub.state.requests if method == "GET" and "/resolve/" in path]
    assert f"/{USER}/encoder/resolve/{first}/model.safetensors" in downloads
    assert not [path for path in downloads if "/resolve/main/" in path]
