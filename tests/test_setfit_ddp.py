"""SetFit under `accelerate launch --num_processes 2`, on the CPU (gloo): every process trains the body on its share
of the pairs, the model equals one process's with the batch of both, it is pushed once, and the guards stop both
processes."""

import json
import os

import pytest
from safetensors.torch import load_file

from conftest import (
    ORG,
    ROOT,
    accelerate_launch,
    accelerate_launcher,
    load_trainer,
    run_script,
    setfit_predict_in_fresh_process,
    stop_launch,
)
from shared.args import parse_cli
from tiny import build_tiny_encoder, build_tiny_sentence_transformer

setfit_fewshot = load_trainer("setfit_fewshot")
ON_CPU = {"ACCELERATE_USE_CPU": "true"}  # accelerate's --multi_gpu launch, with gloo on the CPU


@pytest.fixture(scope="module")
def without_dropout(tmp_path_factory) -> str:
    """A tiny sentence-transformers body without dropout, so that how the batches are split is all that differs."""
    root = tmp_path_factory.mktemp("no-dropout")
    encoder = build_tiny_encoder("bert", str(root / "bert"))
    config = json.load(open(os.path.join(encoder, "config.json")))
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    json.dump(config, open(os.path.join(encoder, "config.json"), "w"))
    return build_tiny_sentence_transformer(encoder, str(root / "st"))


def flags(model: str, reviews: dict, out, *more: str) -> list[str]:
    return [
        "--model_name_or_path", model, "--train_file", reviews["train"], "--test_file", reviews["test"],
        "--text_column_name", "review", "--label_column_name", "sentiment", "--samples_per_label", "4",
        "--num_iterations", "4", "--num_train_epochs", "2", "--learning_rate", "1e-3", "--output_dir", str(out),
        # fp32, where two processes' gradients summed in another order differ only in the last bits: the models are
        # compared weight by weight (bf16, the default where the CPU has it, rounds those differences up).
        "--bf16", "false", *more,
    ]  # fmt: skip


def test_two_processes_train_their_shares_as_one_with_both_batches_and_push_once(
    hub, without_dropout, reviews, tmp_path
):
    repo_id = f"{ORG}/tiny-setfit"
    result = accelerate_launch(
        "trainers/setfit_fewshot.py",
        *flags(without_dropout, reviews, tmp_path / "two", "--per_device_train_batch_size", "8",
               "--push_to_hub", "--hub_model_id", repo_id),
        env={**hub.env, **ON_CPU}, processes=2,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # 8 examples x 4 iterations x 2 = 64 pairs; each process trains on every other batch of 8.
    for process in (0, 1):
        assert f"process {process} of 2 trains the body on 32 of the 64 pairs per epoch" in result.stderr
    commits = hub.state.repo(repo_id).commits
    assert len(commits) == 1
    assert {"model_head.pkl", "model_head.safetensors", "config_setfit.json", "results.json"} <= set(commits[0].files)
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["device"] == "cpu x 2 processes" and two["method_details"]["pairs_seen"] == 128

    # One process with the batch of both (16) sees the same pairs in the same steps: the same model.
    one_process = setfit_fewshot.main(
        *parse_cli(
            setfit_fewshot.ARGUMENTS, "", flags(without_dropout, reviews, tmp_path / "one",
                                                "--per_device_train_batch_size", "16")
        )
    )  # fmt: skip
    assert one_process["metrics"] == two["metrics"]
    one, both = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    start = load_file(os.path.join(without_dropout, "model.safetensors"))
    for name, weights in one.items():
        assert (weights - both[name]).abs().max() < 1e-6, name
    assert max((one[name] - start[name]).abs().max() for name in one) > 1e-3  # the body did train

    env = {**hub.env, "HF_HOME": str(tmp_path / "fresh")}
    assert setfit_predict_in_fresh_process(repo_id, ["great fun movie"], env=env)[0] in {"negative", "positive"}


def test_a_diverging_body_stops_both_processes_and_publishes_nothing(
    hub, tiny_sentence_transformer, reviews, tmp_path
):
    repo_id = f"{ORG}/diverged"
    result = accelerate_launch(
        "trainers/setfit_fewshot.py",
        *flags(tiny_sentence_transformer, reviews, tmp_path / "out", "--learning_rate", "1e6", "--push_to_hub",
               "--hub_model_id", repo_id),
        env={**hub.env, **ON_CPU}, processes=2,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.count("error: non-finite loss at step") == 1, result.stderr[-3000:]  # said once, not twice
    assert hub.state.repo(repo_id).commits == []
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_sigterm_stops_both_processes_and_publishes_nothing(hub, tiny_sentence_transformer, reviews, tmp_path):
    repo_id = f"{ORG}/stopped"
    out = tmp_path / "out"
    launcher = run_script(
        [*accelerate_launcher(2), os.path.join(ROOT, "trainers", "setfit_fewshot.py"),
         *flags(tiny_sentence_transformer, reviews, out, "--num_iterations", "500", "--save_strategy", "steps",
                "--save_steps", "2", "--push_to_hub", "--hub_model_id", repo_id)],
        env={**hub.env, **ON_CPU}, background=True,
    )  # fmt: skip
    stderr = stop_launch(launcher, "setfit_fewshot", 2, str(out / "checkpoint-2"))
    assert launcher.returncode != 0
    assert "stopped by SIG" in stderr and "nothing was published" in stderr, stderr[-3000:]
    assert stderr.count("error: stopped by SIG") == 1, "every process said it: one line for each"
    assert hub.state.repo(repo_id).commits == []
    assert not (out / "model.safetensors").exists()


def test_processes_that_cannot_join_one_group_are_refused(tiny_sentence_transformer, reviews, tmp_path):
    """Without a GPU each and without ACCELERATE_USE_CPU, each process would train alone and publish."""
    result = accelerate_launch(
        "trainers/setfit_fewshot.py", *flags(tiny_sentence_transformer, reviews, tmp_path / "out"),
        env={"ACCELERATE_USE_CPU": "false"}, processes=2,
    )  # fmt: skip
    assert result.returncode != 0
    assert "error: launched as 2 processes, but they did not join one torch.distributed group" in result.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()
