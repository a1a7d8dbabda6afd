"""The staged Space built and run as Hugging Face Spaces run it: a fresh virtual environment with only what the
Space installs (gradio at the card's sdk_version, then requirements.txt), the files of preload_from_hub fetched at
build time, the staged folder as the working directory, the models pulled by repo id from the test Hub, and the
app answering through gradio_client.

The environment is cached under SPACE_VENV_CACHE (default ~/.cache/encoder-classifiers/space-venvs), keyed on
everything that goes into it; it is built under a temporary name and renamed when complete, so a build that was
interrupted is never reused. torch comes from its CPU wheel, as `make setup` installs it: the same release as the
pin, without the CUDA libraries that a machine without a GPU cannot use.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml
from huggingface_hub import SpaceCard

from conftest import USER, free_port, run_script
from space_harness import publish_models, wait_for_client

CACHE = os.environ.get("SPACE_VENV_CACHE") or os.path.join(
    os.path.expanduser("~"), ".cache", "encoder-classifiers", "space-venvs"
)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"  # the Makefile's, where no local CPU wheel is found


def space_python(folder: str) -> str:
    """The Python of a virtual environment holding exactly what the Space in `folder` installs."""
    sdk = f"gradio=={SpaceCard.load(os.path.join(folder, 'README.md')).data.sdk_version}"
    with open(os.path.join(folder, "requirements.txt")) as f:
        requirements = f.read()
    key = hashlib.sha256(f"{sys.version}\n{sdk}\n{requirements}".encode()).hexdigest()[:16]
    venv = os.path.join(CACHE, key)
    if not os.path.exists(os.path.join(venv, "bin", "python")):
        build_venv(venv, sdk, requirements, os.path.join(folder, "requirements.txt"))
    return os.path.join(venv, "bin", "python")


def build_venv(venv: str, sdk: str, requirements: str, requirements_file: str) -> None:
    os.makedirs(CACHE, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=f"{os.path.basename(venv)}.partial-", dir=CACHE)
    try:
        subprocess.run([sys.executable, "-m", "venv", partial], check=True)
        pip = [os.path.join(partial, "bin", "python"), "-m", "pip", "install", "--quiet"]
        torch = next(line for line in requirements.splitlines() if line.startswith("torch=="))
        if subprocess.run([*pip, f"{torch}+cpu"], timeout=1800).returncode != 0:
            subprocess.run([*pip, f"{torch}+cpu", "--extra-index-url", TORCH_CPU_INDEX], check=True, timeout=1800)
        subprocess.run([*pip, sdk, "-r", requirements_file], check=True, timeout=1800)
        try:
            os.rename(partial, venv)
        except OSError:  # another run completed the same environment first
            if not os.path.exists(venv):
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # what is left of a failed or superfluous build


def preload(python: str, folder: str, env: dict) -> None:
    """What the Space's build does with preload_from_hub: each file, at its commit, into the Hub cache."""
    entries = SpaceCard.load(os.path.join(folder, "README.md")).data.preload_from_hub
    code = (
        "import sys\nfrom huggingface_hub import hf_hub_download\n"
        "for repo, files, commit in map(str.split, sys.argv[1:]):\n"
        "    for file in files.split(','):\n"
        "        hf_hub_download(repo, file, revision=commit)\n"
    )
    subprocess.run([python, "-c", code, *entries], env=env, check=True, timeout=300)


@pytest.mark.slow
def test_the_staged_space_builds_and_answers_on_its_own(hub, trained, tiny_bert, tmp_path):
    repos = publish_models(hub, trained, tiny_bert)
    classifiers = [repos[name] for name in ("full", "setfit", "mlm")]
    folder = str(tmp_path / "space")
    staged = run_script(
        [sys.executable, "space/deploy.py", "--space_id", f"{USER}/compare", "--models", ",".join(classifiers),
         "--local_dir", folder],
        env=hub.env,
    )  # fmt: skip
    assert staged.returncode == 0, staged.stderr[-3000:]
    python = space_python(folder)
    port = free_port()
    # What a Space's container has: no project on the path, no token, its own cache; the Hub is the test server.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf_home"),
           "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "PYTHONUNBUFFERED": "1"}  # fmt: skip
    preload(python, folder, env)
    preloaded = len(hub.state.requests)

    log = tmp_path / "app.log"
    with open(log, "w") as output:
        process = subprocess.Popen([python, "app.py"], cwd=folder, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        client = wait_for_client(f"http://127.0.0.1:{port}/", process, str(log), timeout_s=300)
        answers = client.predict("the movie was great fun and charming", api_name="/compare")
        base, adapted = client.predict(repos["mlm"], "the movie was [MASK]", api_name="/fill_mask")
    finally:
        process.kill()

    assert [answer["model"] for answer in answers] == classifiers
    assert all(answer["label"] in {"negative", "positive"} for answer in answers), answers
    assert len(base["data"]) == len(adapted["data"]) == 5 and base["data"] != adapted["data"]
    # The app asked the Hub for each model by repo id at its pinned commit, and found every file it loads preloaded.
    with open(os.path.join(folder, "models.yaml")) as f:
        pins = [(entry["id"], entry["revision"]) for entries in yaml.safe_load(f).values() for entry in entries]
    calls = [path.split("/") for _, path in hub.state.requests[preloaded:] if path.startswith("/api/models/")]
    assert {(f"{owner}/{name}", commit) for _, _, _, owner, name, _, commit in calls} == set(pins)
    assert [path for _, path in hub.state.requests[preloaded:] if "/resolve/" in path] == []
