import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import datasets
import psutil
import pytest
from gradio_client import Client
from huggingface_hub import constants

from hub_server import HubServer
from shared.args import DataArguments, ModelArguments, RecipeTrainingArguments
from shared.inference import ModelSpec
from tiny import (
    FAMILIES,
    build_tiny_encoder,
    build_tiny_sentence_transformer,
    write_imbalanced_reviews_csv,
    write_reviews_csv,
    write_tagged_reviews_csv,
)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the app under test
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A token distinctive enough that finding it anywhere (a file, a log line) can only mean it leaked.
TOKEN = "hf_TestTokenThatMustNeverBeWritten1234567"
USER, ORG = "alice", "test-org"


# A job that a non-interactive shell starts in the background (as CI may run the suite) ignores SIGINT, and every
# process it starts inherited that: the Ctrl-C tests saw runs that could not be stopped. The suite takes SIGINT as a
# terminal's command does, and the processes it starts get the default back when they exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def tiny_encoders(tmp_path_factory) -> dict[str, str]:
    """One tiny random encoder per family, saved as a local pretrained checkpoint."""
    root = tmp_path_factory.mktemp("encoders")
    return {family: build_tiny_encoder(family, str(root / family)) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_bert(tiny_encoders) -> str:
    return tiny_encoders["bert"]


@pytest.fixture(scope="session")
def tiny_sentence_transformer(tiny_bert, tmp_path_factory) -> str:
    return build_tiny_sentence_transformer(tiny_bert, str(tmp_path_factory.mktemp("st") / "tiny-st"))


def write_splits(root, writer, splits) -> dict[str, str]:
    """A CSV per (split, rows, seed) in `root`, written by one of tests/tiny.py's writers: split name -> path."""
    return {split: writer(str(root / f"{split}.csv"), n, seed) for split, n, seed in splits}


@pytest.fixture(scope="session")
def reviews(tmp_path_factory) -> dict[str, str]:
    """Train/validation/test CSVs of tiny reviews, columns `review` and `sentiment` (negative/positive)."""
    return write_splits(
        tmp_path_factory.mktemp("reviews"),
        write_reviews_csv,
        (("train", 48, 0), ("validation", 16, 1), ("test", 16, 2)),
    )


@pytest.fixture(scope="session")
def tagged_reviews(tmp_path_factory) -> dict[str, str]:
    """Multi-label train/validation/test CSVs: columns `review` and `tags` (praise, complaint, acting; joined by ;)."""
    return write_splits(
        tmp_path_factory.mktemp("tagged"),
        write_tagged_reviews_csv,
        (("train", 64, 0), ("validation", 16, 1), ("test", 24, 2)),
    )


@pytest.fixture(scope="session")
def imbalanced_reviews(tmp_path_factory) -> dict[str, str]:
    """Train/validation/test CSVs of reviews, one in ten positive (train: 19 of 195, under 10%), columns as in
    `reviews`."""
    return write_splits(
        tmp_path_factory.mktemp("imbalanced"),
        write_imbalanced_reviews_csv,
        (("train", 195, 0), ("validation", 20, 1), ("test", 40, 2)),
    )


@pytest.fixture
def data_args(reviews) -> DataArguments:
    return DataArguments(
        train_file=reviews["train"],
        validation_file=reviews["validation"],
        test_file=reviews["test"],
        text_column_name="review",
        label_column_name="sentiment",
        max_seq_length=32,
    )


@pytest.fixture
def training_args(tmp_path) -> RecipeTrainingArguments:
    """A few quick steps: enough to change every weight, not enough to slow the suite."""
    return RecipeTrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=3,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        seed=7,
        disable_tqdm=True,
    )


def model_args_for(path: str) -> ModelArguments:
    return ModelArguments(model_name_or_path=path)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_bert, tiny_sentence_transformer, reviews) -> dict[str, str]:
    """Folders of a full fine-tuning, a SetFit and an MLM-then-classify model, trained on the tiny reviews."""
    root = tmp_path_factory.mktemp("trained")
    data = DataArguments(
        train_file=reviews["train"], validation_file=reviews["validation"], test_file=reviews["test"],
        text_column_name="review", label_column_name="sentiment", max_seq_length=32,
    )  # fmt: skip

    def args(name: str) -> RecipeTrainingArguments:
        return RecipeTrainingArguments(
            output_dir=str(root / name), max_steps=20, learning_rate=1e-3, per_device_train_batch_size=8,
            report_to="none", save_strategy="no", disable_tqdm=True,
        )  # fmt: skip

    load_module("trainers/full_finetune.py").main(ModelArguments(tiny_bert), data, args("full"))
    mlm = load_module("trainers/mlm_then_classify.py")
    mlm.main(ModelArguments(tiny_bert), data, mlm.MLMArguments(), args("mlm"))
    setfit = load_module("trainers/setfit_fewshot.py")
    setfit_training = setfit.SetFitTrainingArguments(output_dir=str(root / "setfit"), num_train_epochs=1)
    setfit_args = setfit.SetFitArguments(num_iterations=2)
    setfit.main(ModelArguments(tiny_sentence_transformer), data, setfit_args, setfit_training)
    return {"full": str(root / "full"), "setfit": str(root / "setfit"), "mlm": str(root / "mlm")}


@pytest.fixture(scope="session")
def served(trained, tiny_bert, tmp_path_factory):
    """The app on 127.0.0.1 with the three models and one that cannot load; the MLM model's base encoder is the
    local tiny_bert, named as ENCODER_IDS would."""
    app = load_module("space/app.py")
    specs = [ModelSpec(trained["full"]), ModelSpec(trained["setfit"]), ModelSpec(trained["mlm"])]
    specs.append(ModelSpec(str(tmp_path_factory.mktemp("empty"))))  # a folder with no model in it
    demo = app.build_demo(app.load_models(specs, [ModelSpec(tiny_bert)]))
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False), specs
    demo.close()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A Hub-compatible server on 127.0.0.1 that knows TOKEN as USER (a member of ORG).

    The environment points huggingface_hub's real client (and datasets) at it, for this process (constants are
    read at import, so they are set too) and for the subprocesses the tests start.
    """
    with HubServer(tokens={TOKEN: USER}, orgs={USER: [ORG]}) as server:
        env = {"HF_ENDPOINT": server.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        # datasets reads its endpoint at import too; its cache follows, so a dataset of one test's server (same
        # repo, same commit id) is never another's.
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", server.url)
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
        server.env = env
        yield server


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path, monkeypatch):
    """Each test gets its own Hub cache and no stored login, so nothing leaks between tests or from the host."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


def run_script(args: list[str], env: dict | None = None, timeout: int = 600, background: bool = False):
    """Run a command from the project root in a fresh process, the way a user would: to completion, or in the
    background (a Popen the caller must kill)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    if background:
        return subprocess.Popen(
            args, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def accelerate_launch(
    script: str, *flags: str, env: dict | None = None, processes: int = 1
) -> subprocess.CompletedProcess:
    """`accelerate launch` of `script` to its end."""
    return run_script([*accelerate_launcher(processes), os.path.join(ROOT, script), *flags], env=env)


def accelerate_launcher(processes: int = 1) -> list[str]:
    """`accelerate launch` with the project's default config, or with several processes through torchrun
    (accelerate's --multi_gpu launcher; on a machine without GPUs the processes run on the CPU with gloo)."""
    launcher = [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch"]
    if processes == 1:
        return [*launcher, "--config_file", os.path.join(ROOT, "accelerate_config.yaml")]
    return [*launcher, "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision",
            "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]  # fmt: skip


def one_error_line(stderr: str) -> str:
    """A launch's one `error:` line, with no traceback through the project's code. The launchers may add their own:
    torchrun's after a process of several exits non-zero, accelerate's single-process launcher's after Ctrl-C."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and not re.search(r'File ".*/(shared|trainers)/', stderr), stderr[-3000:]
    return errors[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_trainer(name: str):
    """Import a script from trainers/ (a folder of standalone scripts, not a package) to call its main()."""
    return load_module(f"trainers/{name}.py")


def load_module(relative_path: str):
    """Import a standalone script of the project (trainers/*.py, space/app.py) by its path."""
    name = relative_path.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_fresh_process(code: str, env: dict | None = None):
    """Run Python `code` in a new process, as a user's own script would (no project import unless it asks),
    and return the value of the expression it passes to `result(...)`, through JSON."""
    wrapper = "import json\ndef result(value):\n    print('RESULT', json.dumps(value))\n" + code
    process = run_script([sys.executable, "-c", wrapper], env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    line = next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def predict_in_fresh_process(model: str, texts: list[str], env: dict | None = None) -> list[dict]:
    """What a user gets from plain transformers.pipeline in a new Python process, with no project code."""
    code = (
        "import sys\nfrom transformers import pipeline\n"
        f"predictions = pipeline('text-classification', model={model!r})({texts!r})\n"
        "assert 'shared' not in sys.modules, 'project code was imported'\n"
        "result(predictions)\n"
    )
    return run_in_fresh_process(code, env)


def setfit_predict_in_fresh_process(model: str, texts: list[str], env: dict | None = None) -> list[str]:
    """Labels from plain SetFitModel.from_pretrained in a new Python process."""
    code = f"from setfit import SetFitModel\nresult(list(SetFitModel.from_pretrained({model!r}).predict({texts!r})))\n"
    return run_in_fresh_process(code, env)


def stop_launch(
    launcher: subprocess.Popen, script: str, processes: int, checkpoint: str, signum=signal.SIGTERM, target="launcher"
) -> str:
    """Once `checkpoint` exists, send `signum` to the `accelerate launch` process (target "launcher"), to one of
    its `processes` training processes of `script` ("training process"), or to all of them, as a terminal sends
    Ctrl-C to its foreground job ("terminal"); assert that every training process is gone within 30 s, and return
    the launcher's stderr. The launcher is killed if anything fails on the way."""
    try:
        deadline = time.monotonic() + 120
        while not os.path.isdir(checkpoint):
            assert time.monotonic() < deadline and launcher.poll() is None, f"no {checkpoint} within 120 s"
            time.sleep(0.2)
        children = psutil.Process(launcher.pid).children(recursive=True)
        training = [p for p in children if script in " ".join(p.cmdline())]
        assert len(training) == processes
        targets = {"launcher": [psutil.Process(launcher.pid)], "training process": training[:1],
                   "terminal": [psutil.Process(launcher.pid), *training]}[target]  # fmt: skip
        for process in targets:
            process.send_signal(signum)
        _, still_running = psutil.wait_procs(training, timeout=30)
        assert not still_running, "a training process outlived the stop by more than 30 s"
        return launcher.communicate(timeout=30)[1]
    finally:
        if launcher.poll() is None:
            launcher.kill()
