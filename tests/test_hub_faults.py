"""Publishing when something goes wrong, through huggingface_hub's real client and the test Hub's fault injection:
a repo the token may only read, a Hub that is offline, unreachable or silent, failures at each step of an upload, a
Retry-After, a lost commit answer, a stale model in the repo. What is pushed is a folder of a few small files laid
out as a run leaves its output_dir, not a trained model."""

import logging
import os
import re
import shlex
import socket
import sys
import time

import httpx2
import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError

from conftest import TOKEN, USER, free_port, run_script
from shared.args import HubArguments
from shared.errors import InputError, PublishError, exit_on_cli_error
from shared.hub import preflight, push_folder

REPO = f"{USER}/faults"
MODEL = {  # the final model of a transformers run, with its card and results
    "config.json": b'{"id2label": {"0": "negative", "1": "positive"}}',
    "model.safetensors": bytes(range(256)) * 64,
    "tokenizer.json": b'{"version": "1.0"}',
    "README.md": b"---\nlicense: mit\n---\n# A tiny classifier\n",
    "results.json": b'{"method": "full_finetune"}',
}
NEVER_PUBLISHED = {  # what training leaves beside it: a checkpoint, pickles, tracker logs
    "checkpoint-2/model.safetensors": b"weights of step 2",
    "checkpoint-2/optimizer.pt": b"a pickle",
    "checkpoint-2/trainer_state.json": b"{}",
    "training_args.bin": b"a pickle",
    "rng_state.pth": b"a pickle",
    "runs/May01_10-00-00/events.out.tfevents.1": b"a tensorboard log",
}
SETFIT = {  # the files of a SetFit model that differ from it, and the ones it has besides
    **MODEL,
    "model.safetensors": bytes(range(255, -1, -1)) * 64,
    "config_setfit.json": b'{"labels": null}',
    "model_head.pkl": b"a pickle",
    "1_Pooling/config.json": b"{}",
}
# Waits short enough for a test: every retry below takes milliseconds, not huggingface_hub's seconds.
FAST = {"first_wait_s": 0.01, "max_wait_s": 0.5, "budget_s": 5.0}
# Where each step of an upload goes, and the error a Hub (or the storage behind LFS) answers when it is down.
STEPS = {
    "preupload": ("POST", r"^/api/models/.+/preupload/", 503),
    "LFS batch": ("POST", r"\.git/info/lfs/objects/batch$", 502),
    "LFS transfer": ("PUT", r"^/lfs-storage/", 500),
    "commit": ("POST", r"^/api/models/.+/commit/", 503),
}


def write_folder(folder, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    return str(folder)


@pytest.fixture
def out(tmp_path) -> str:
    """An output_dir as a finished run leaves it."""
    return write_folder(tmp_path / "out", {**MODEL, **NEVER_PUBLISHED})


@pytest.fixture
def target(hub, out):
    return preflight(HubArguments(push_to_hub=True, hub_model_id=REPO), out)


@pytest.fixture(autouse=True)
def no_token_in_any_log_line(caplog):
    """Every test here: the token is in no log record of any logger at any level, failures included."""
    caplog.set_level(logging.DEBUG)
    yield
    assert not [record for record in caplog.records if TOKEN in record.getMessage()]


def commits(hub, repo_id: str = REPO):
    return hub.state.repo(repo_id).commits


def calls(hub, step: str) -> int:
    method, path, _ = STEPS[step]
    return sum(1 for m, p in hub.state.requests if m == method and re.search(path, p))


def what_the_user_sees(capsys, run) -> tuple[int, list[str], float]:
    """A command line's failure as its user sees it (every script ends in exit_on_cli_error): the exit code, the
    lines on stderr, and how long it took."""
    start = time.monotonic()
    with pytest.raises(SystemExit) as exited, exit_on_cli_error():
        run()
    return exited.value.code, capsys.readouterr().err.splitlines(), time.monotonic() - start


def test_a_repo_the_token_can_only_read_is_refused_in_the_preflight(hub, tmp_path):
    for repo_id, private in (("bob/public-model", False), ("bob/private-model", True)):
        hub.state.add_repo(repo_id, private=private, readers=(USER,))
        with pytest.raises(InputError) as refused:
            preflight(HubArguments(push_to_hub=True, hub_model_id=repo_id), str(tmp_path))
        message = str(refused.value)
        assert message.startswith(f"alice can read the model repo {repo_id} but may not write to it (403 ")
        assert "\n" not in message and TOKEN not in message
        assert commits(hub, repo_id) == []


def test_offline_mode_fails_the_preflight_with_one_line(hub, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import, as conftest's `hub` notes
    code, lines, _ = what_the_user_sees(
        capsys, lambda: preflight(HubArguments(push_to_hub=True, hub_model_id=REPO), str(tmp_path))
    )
    assert (code, lines) == (
        2,
        ["error: publishing needs the Hub, but offline mode is on (HF_HUB_OFFLINE): unset it to publish"],
    )
    assert hub.state.requests == []  # nothing was even tried


def test_an_unreachable_or_silent_hub_fails_the_preflight_in_seconds_with_one_line(hub, monkeypatch, capsys, tmp_path):
    with socket.socket() as silent:  # accepts connections and never answers, like a Hub behind a stuck proxy
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        for endpoint, cause in (
            (f"http://127.0.0.1:{free_port()}", "ConnectError: "),
            (f"http://127.0.0.1:{silent.getsockname()[1]}", "ReadTimeout: "),
        ):
            monkeypatch.setattr(constants, "ENDPOINT", endpoint)
            code, lines, took = what_the_user_sees(
                capsys,
                lambda: preflight(HubArguments(push_to_hub=True, hub_model_id=REPO), str(tmp_path), timeout_s=1.0),
            )
            assert code == 2 and took < 3
            assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach the Hub at {endpoint} ({cause}")
            assert lines[0].endswith("check HF_ENDPOINT and the network, or try again later")
            assert TOKEN not in lines[0]


@pytest.mark.parametrize("step", STEPS)
def test_each_step_of_an_upload_is_retried_until_it_succeeds_in_one_commit(hub, out, target, step):
    method, path, status = STEPS[step]
    hub.state.add_fault(method, path, status, times=6)  # more than huggingface_hub would retry by itself
    start = time.monotonic()

    url = push_folder(out, target, "a tiny model", **FAST)

    [commit] = commits(hub)
    assert set(commit.files) == set(MODEL) and url.endswith(commit.oid)
    assert calls(hub, step) == 7
    # Six waits of ours (0.01 s, doubling), none of huggingface_hub's own (1 + 2 + 4 + 8 + 8 s before it gives up).
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("step, retry_after, cap", [("commit", 1, 10.0), ("preupload", 30, 0.5)])
def test_retry_after_is_honoured_up_to_the_cap(hub, out, target, step, retry_after, cap):
    method, path, _ = STEPS[step]
    hub.state.add_fault(method, path, 429, headers={"Retry-After": str(retry_after)})
    start = time.monotonic()

    push_folder(out, target, "a tiny model", first_wait_s=0.01, max_wait_s=cap, budget_s=60)

    waited = min(retry_after, cap)
    assert waited <= time.monotonic() - start < waited + 2
    assert len(commits(hub)) == 1


def test_a_commit_whose_answer_was_lost_is_made_once(hub, out, target):
    hub.state.lose_responses("POST", STEPS["commit"][1])

    url = push_folder(out, target, "a tiny model", **FAST)

    [commit] = commits(hub)
    assert set(commit.files) == set(MODEL) and url.endswith(commit.oid)
    assert calls(hub, "commit") == 1  # the next attempt found every file there, and had nothing to commit


def test_a_push_leaves_the_repo_holding_exactly_the_new_model(hub, out, target, tmp_path):
    push_folder(write_folder(tmp_path / "setfit", SETFIT), target, "a SetFit model")
    push_folder(out, target, "a transformers model")

    first, second = commits(hub)
    assert set(first.files) == set(SETFIT)
    assert set(second.files) == set(MODEL)  # no config_setfit.json, no model_head.pkl, no 1_Pooling/


def test_a_push_that_keeps_failing_ends_in_one_error_whose_command_publishes_exactly_the_model(
    hub, out, target, tmp_path
):
    push_folder(write_folder(tmp_path / "setfit", SETFIT), target, "a SetFit model")
    hub.state.add_fault("PUT", STEPS["LFS transfer"][1], 500, times=1000)
    start = time.monotonic()

    with pytest.raises(PublishError) as failed:
        push_folder(out, target, "a transformers model", first_wait_s=0.05, max_wait_s=0.5, budget_s=1.0)

    assert time.monotonic() - start < 3  # the budget, plus the last attempt
    message = str(failed.value)
    assert "\n" not in message and TOKEN not in message
    assert re.match(rf"publishing {re.escape(out)} to {REPO} failed after \d+ attempts in 1 s \(500 injected", message)
    assert f"; the model is saved in {out}: publish it later with `hf upload {REPO} " in message
    assert len(commits(hub)) == 1  # the SetFit model is still there

    hub.state.faults.clear()  # the Hub is back: the command in the message finishes the job
    command = shlex.split(re.search(r"publish it later with `(.+)`$", message).group(1))
    assert command[:2] == ["hf", "upload"]
    result = run_script([os.path.join(os.path.dirname(sys.executable), "hf"), *command[1:]], env=hub.env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert TOKEN not in result.stdout + result.stderr
    assert len(commits(hub)) == 2
    assert set(commits(hub)[-1].files) == set(MODEL)


def test_the_test_hub_deletes_files_and_folders_as_the_hub_does(hub, out):
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(REPO)
    api.upload_folder(repo_id=REPO, folder_path=out)
    api.delete_folder("checkpoint-2", repo_id=REPO)
    api.delete_file("training_args.bin", repo_id=REPO)
    assert set(commits(hub)[-1].files) == set(MODEL) | {"rng_state.pth", "runs/May01_10-00-00/events.out.tfevents.1"}
    with pytest.raises(HfHubHTTPError, match="404"):  # nothing there to delete: the Hub refuses, commits nothing
        api.delete_file("training_args.bin", repo_id=REPO)
    assert len(commits(hub)) == 3


def test_the_test_hub_reads_a_refused_request_so_the_connection_stays_usable(hub):
    with httpx2.Client(base_url=hub.url) as client:
        refused = client.post("/api/repos/create", json={"name": "model"})  # no token: 401
        whoami = client.get("/api/whoami-v2", headers={"Authorization": f"Bearer {TOKEN}"})  # on the same connection
    assert refused.status_code == 401
    assert whoami.status_code == 200 and whoami.json()["name"] == USER
