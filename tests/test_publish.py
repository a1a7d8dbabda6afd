"""Publishing through huggingface_hub's real client to a Hub-compatible server on 127.0.0.1, and loading the
published model back by repo id in a fresh process. With REAL_HF_TOKEN and REAL_HF_NAMESPACE set, the same
round trip runs against the real Hub (marker real_hub)."""

import json
import os
import re
import uuid

import pytest
from huggingface_hub import HfApi

from conftest import ORG, TOKEN, USER, accelerate_launch, load_trainer, model_args_for, predict_in_fresh_process
from shared.errors import InputError, PublishError

full_finetune = load_trainer("full_finetune")
PUBLISHED = {
    "model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md", "results.json"
}  # fmt: skip


def train_and_push(tiny_bert, reviews, out, repo_id, env, *extra):
    return accelerate_launch(
        "trainers/full_finetune.py",
        "--model_name_or_path", tiny_bert,
        "--train_file", reviews["train"], "--validation_file", reviews["validation"], "--test_file", reviews["test"],
        "--text_column_name", "review", "--label_column_name", "sentiment",
        "--output_dir", out, "--max_steps", "3", "--learning_rate", "1e-3",
        "--push_to_hub", "--hub_model_id", repo_id, *extra,
        env=env,
    )  # fmt: skip


def files_under(folder) -> dict[str, bytes]:
    return {
        os.path.join(root, name): open(os.path.join(root, name), "rb").read()
        for root, _, names in os.walk(folder)
        for name in names
    }


def test_push_then_load_by_repo_id_in_a_fresh_process(hub, tiny_bert, reviews, tmp_path):
    repo_id = f"{ORG}/tiny-bert-reviews"
    result = train_and_push(tiny_bert, reviews, str(tmp_path / "out"), repo_id, hub.env)
    assert result.returncode == 0, result.stderr[-3000:]

    repo = hub.state.repo(repo_id)
    assert len(repo.commits) == 1
    files = repo.commits[-1].files
    assert set(files) == PUBLISHED  # the final model only: no checkpoints, no training_args.bin
    assert "model.safetensors" in repo.commits[-1].lfs
    assert f'model="{repo_id}"' in files["README.md"].decode()
    called = {f"{method} {path}" for method, path in hub.state.requests}
    api = f"/api/models/{repo_id}"
    for endpoint in ("GET /api/whoami-v2", "POST /api/repos/create", f"POST {api}/preupload/main",
                     f"POST /{repo_id}.git/info/lfs/objects/batch", f"POST {api}/commit/main"):  # fmt: skip
        assert endpoint in called

    # The token was sent to the server, but written nowhere: not in a log line, a local file or a published one.
    assert TOKEN not in result.stdout + result.stderr
    assert not [path for path, data in files_under(tmp_path / "out").items() if TOKEN.encode() in data]
    assert not [path for path, data in files.items() if TOKEN.encode() in data]

    env = {**hub.env, "HF_HOME": str(tmp_path / "fresh_cache")}
    predictions = predict_in_fresh_process(repo_id, ["great fun movie", "boring dull plot"], env=env)
    assert {p["label"] for p in predictions} <= {"negative", "positive"}
    downloads = [path for method, path in hub.state.requests if method == "GET" and "/resolve/" in path]
    assert any(re.fullmatch(rf"/{repo_id}/resolve/\w+/model.safetensors", path) for path in downloads)


def test_a_503_then_success_ends_in_exactly_one_commit(hub, tiny_bert, data_args, training_args):
    training_args.push_to_hub, training_args.hub_model_id = True, f"{USER}/flaky"
    hub.state.add_fault("POST", r"^/api/models/alice/flaky/commit/", 503)

    full_finetune.main(model_args_for(tiny_bert), data_args, training_args)

    commit_calls = [p for m, p in hub.state.requests if m == "POST" and p.endswith("/commit/main")]
    assert len(commit_calls) == 2  # the refused one and the retry
    assert len(hub.state.repo(f"{USER}/flaky").commits) == 1
    assert set(hub.state.repo(f"{USER}/flaky").commits[0].files) == PUBLISHED


def test_a_rejected_token_fails_in_the_preflight(hub, monkeypatch, tiny_bert, data_args, training_args):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token")
    training_args.push_to_hub, training_args.hub_model_id = True, f"{USER}/never"

    with pytest.raises(InputError, match=r"rejected the token \(401 .*\): set HF_TOKEN to a valid token"):
        full_finetune.main(model_args_for(tiny_bert), data_args, training_args)
    assert not os.path.exists(training_args.output_dir)
    assert hub.state.repo(f"{USER}/never") is None


def test_a_folder_of_another_run_is_refused_before_the_repo_is_created(hub, tiny_bert, data_args, training_args):
    """The preflight creates the repo: a refusal after it left an empty repo on the Hub."""
    os.makedirs(training_args.output_dir)
    open(os.path.join(training_args.output_dir, "notes.txt"), "w").write("another run's")
    training_args.push_to_hub, training_args.hub_model_id = True, f"{USER}/refused"

    with pytest.raises(InputError, match=r"already holds files \(notes.txt\)"):
        full_finetune.main(model_args_for(tiny_bert), data_args, training_args)
    assert hub.state.repos == {}


def test_push_without_any_token_says_how_to_log_in(hub, monkeypatch, tiny_bert, data_args, training_args):
    monkeypatch.delenv("HF_TOKEN")
    training_args.push_to_hub = True
    with pytest.raises(InputError, match=r"needs a Hub token .* set HF_TOKEN or run `hf auth login`"):
        full_finetune.main(model_args_for(tiny_bert), data_args, training_args)


def test_a_private_run_never_lands_in_an_existing_public_repo(hub, tiny_bert, data_args, training_args):
    HfApi(endpoint=hub.url, token=TOKEN).create_repo(f"{USER}/public-model", private=False)
    training_args.push_to_hub, training_args.hub_model_id = True, f"{USER}/public-model"
    training_args.hub_private_repo = True

    with pytest.raises(InputError, match=r"alice/public-model already exists and is public"):
        full_finetune.main(model_args_for(tiny_bert), data_args, training_args)
    assert hub.state.repo(f"{USER}/public-model").commits == []
    assert not os.path.exists(training_args.output_dir)


def test_a_namespace_we_cannot_write_to_fails_in_the_preflight(hub, tiny_bert, data_args, training_args):
    training_args.push_to_hub, training_args.hub_model_id = True, "someone-else/model"
    with pytest.raises(InputError, match=r"cannot create or open the model repo someone-else/model .* \(403"):
        full_finetune.main(model_args_for(tiny_bert), data_args, training_args)


def test_a_failed_push_keeps_the_trained_model_and_says_how_to_retry(hub, tiny_bert, data_args, training_args):
    training_args.push_to_hub, training_args.hub_model_id = True, f"{USER}/refused"
    hub.state.add_fault("POST", r"/commit/", 403)

    with pytest.raises(PublishError, match=r"publish it later with `hf upload alice/refused "):
        full_finetune.main(model_args_for(tiny_bert), data_args, training_args)
    assert PUBLISHED <= set(os.listdir(training_args.output_dir))


def test_the_default_repo_is_the_users_namespace_and_the_output_folder_name(hub, tiny_bert, data_args, training_args):
    training_args.push_to_hub = True
    full_finetune.main(model_args_for(tiny_bert), data_args, training_args)
    assert hub.state.repo(f"{USER}/run") is not None  # output_dir is .../run


@pytest.mark.real_hub
def test_round_trip_on_the_real_hub(tiny_bert, reviews, tmp_path):
    token, namespace = os.environ.get("REAL_HF_TOKEN"), os.environ.get("REAL_HF_NAMESPACE")
    if not (token and namespace):
        pytest.skip("set REAL_HF_TOKEN and REAL_HF_NAMESPACE (and HF_ENDPOINT for a non-default Hub) to run")
    env = {"HF_TOKEN": token, "HF_HOME": str(tmp_path / "hf_home")}
    repo_id = f"{namespace}/encoder-classifiers-test-{uuid.uuid4().hex[:8]}"
    try:
        result = train_and_push(tiny_bert, reviews, str(tmp_path / "out"), repo_id, env, "--hub_private_repo")
        assert result.returncode == 0, result.stderr[-3000:]
        assert token not in result.stdout + result.stderr
        predictions = predict_in_fresh_process(repo_id, ["great fun movie"], env=env)
        assert predictions[0]["label"] in {"negative", "positive"}
    finally:
        HfApi(token=token).delete_repo(repo_id, missing_ok=True)


@pytest.mark.parametrize("script", ["full_finetune", "mlm_then_classify"])
def test_data_parallel_processes_train_together_and_publish_once(script, hub, tiny_bert, reviews, tmp_path):
    out = str(tmp_path / "ddp")
    result = accelerate_launch(
        f"trainers/{script}.py",
        "--model_name_or_path", tiny_bert, "--train_file", reviews["train"], "--test_file", reviews["test"],
        "--text_column_name", "review", "--label_column_name", "sentiment",
        "--output_dir", out, "--max_steps", "3", "--push_to_hub", "--hub_model_id", f"{USER}/ddp",
        env={**hub.env, "ACCELERATE_USE_CPU": "true"}, processes=2,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # transformers' report of the new head's weights, once: not once per process (the masked-LM phase's Trainer set
    # the other processes' level back to warnings before the classifier loaded).
    reports = [line for line in result.stderr.splitlines() if "LOAD REPORT" in line]
    assert len(reports) == len(set(reports)) >= 1, result.stderr[-3000:]
    assert len(hub.state.repo(f"{USER}/ddp").commits) == 1
    results = json.loads(hub.state.repo(f"{USER}/ddp").commits[0].files["results.json"])
    assert results["device"] == "cpu x 2 processes" and results["hyperparameters"]["processes"] == 2
    assert sum(map(sum, results["metrics"]["confusion_matrix"])) == 16  # every test row once, none twice
