"""What the Space's deploy and build tests share: the tiny trained models published to the test Hub the way the
trainers publish them, and waiting for an app started in another process to answer."""

import json
import os
import time

from gradio_client import Client
from huggingface_hub import HfApi

from conftest import TOKEN, USER

# What the trainers leave out of a push: pickled training arguments, and the MLM run's encoder (published apart).
NOT_PUBLISHED = ["training_args.bin", "mlm/**"]


def publish_models(hub, trained: dict[str, str], tiny_bert: str) -> dict[str, str]:
    """Repo ids by name: the classifiers full, setfit and mlm, and bert and mlm-encoder, the base and adapted
    encoders that mlm's results.json names, as a --push_to_hub run records them."""
    api = HfApi(endpoint=hub.url, token=TOKEN)
    folders = {
        "full": trained["full"],
        "setfit": trained["setfit"],
        "mlm": trained["mlm"],
        "bert": tiny_bert,
        "mlm-encoder": os.path.join(trained["mlm"], "mlm"),
    }
    repos = {name: f"{USER}/{name}" for name in folders}
    for name, folder in folders.items():
        api.create_repo(repos[name])
        api.upload_folder(repo_id=repos[name], folder_path=folder, ignore_patterns=NOT_PUBLISHED)
    with open(os.path.join(trained["mlm"], "results.json")) as f:
        results = json.load(f)
    results["base_model"], results["base_model_on_hub"] = repos["bert"], True
    results["method_details"]["adapted_encoder"] = repos["mlm-encoder"]
    api.upload_file(path_or_fileobj=json.dumps(results).encode(), path_in_repo="results.json", repo_id=repos["mlm"])
    # Weights in a pickle-based format beside the safetensors: nothing may ever fetch them.
    api.upload_file(path_or_fileobj=b"not a checkpoint", path_in_repo="pytorch_model.bin", repo_id=repos["bert"])
    return repos


def wait_for_client(url: str, process, log_path: str, timeout_s: float = 120) -> Client:
    """A client of the app at `url` once it answers; the app's log in the error if it exits or never answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            return Client(url, verbose=False)
        except Exception:
            time.sleep(1)
    with open(log_path) as f:
        raise AssertionError(f"the app did not answer at {url}: {f.read()[-3000:]}")
