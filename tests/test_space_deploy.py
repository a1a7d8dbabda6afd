"""space/deploy.py: the folder it stages is a Space that needs nothing else, and it is exactly what it uploads."""

import ast
import os
import sys
from importlib.metadata import packages_distributions, version

import yaml
from huggingface_hub import HfApi, SpaceCard

from conftest import ROOT, TOKEN, USER, run_script
from space_harness import publish_models

CLASSIFIERS = ["full", "setfit", "mlm"]
ENCODERS = ["bert", "mlm-encoder"]  # the base and adapted encoders that mlm's results.json names


def deploy(hub, *flags: str):
    return run_script([sys.executable, "space/deploy.py", "--space_id", f"{USER}/compare", *flags], env=hub.env)


def read_folder(folder) -> dict[str, bytes]:
    """Every file under `folder`, by its path relative to it."""
    files = {}
    for directory, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                files[os.path.relpath(os.path.join(directory, name), folder)] = f.read()
    return files


def pinned_requirements(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("==") if "==" in line else (line, None) for line in lines)


def test_local_dir_stages_a_space_that_needs_nothing_else(hub, trained, tiny_bert, tmp_path):
    repos = publish_models(hub, trained, tiny_bert)
    folder = tmp_path / "space"
    result = deploy(hub, "--models", ",".join(repos[name] for name in CLASSIFIERS), "--local_dir", str(folder))

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(folder) and TOKEN not in result.stdout + result.stderr
    assert hub.state.repo(f"{USER}/compare", "space") is None  # staged, not uploaded
    files = read_folder(folder)
    generated = {"README.md", "models.yaml", "requirements.txt"}
    code = set(files) - generated
    assert {"app.py", "shared/inference.py"} <= code and all(path.startswith("shared/") for path in code - {"app.py"})
    for path in code:  # copies of the one source, never edited
        with open(os.path.join(ROOT, "space" if path == "app.py" else "", path), "rb") as f:
            assert files[path] == f.read(), path

    api = HfApi(endpoint=hub.url, token=TOKEN)
    commits = {name: api.model_info(repo).sha for name, repo in repos.items()}
    card = SpaceCard.load(folder / "README.md").data
    assert (card.sdk, card.sdk_version, card.app_file) == ("gradio", version("gradio"), "app.py")
    assert card.python_version == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert 0 < len(card.short_description) <= 60 and card.license == "apache-2.0"
    assert card.models == [repos[name] for name in CLASSIFIERS + ENCODERS]
    preload = {repo: (names.split(","), commit) for repo, names, commit in map(str.split, card.preload_from_hub)}
    assert {repo: commit for repo, (_, commit) in preload.items()} == {repos[name]: commits[name] for name in repos}
    for repo, (names, commit) in preload.items():
        assert set(names) <= set(api.list_repo_files(repo, revision=commit))
        assert "config.json" in names and "tokenizer.json" in names and "model.safetensors" in names
        assert not [name for name in names if name.endswith((".bin", ".pkl"))]  # nothing that unpickles
    assert "model_head.safetensors" in preload[repos["setfit"]][0]

    assert yaml.safe_load(files["models.yaml"]) == {
        "models": [{"id": repos[name], "revision": commits[name]} for name in CLASSIFIERS],
        "encoders": [{"id": repos[name], "revision": commits[name]} for name in ENCODERS],
    }

    pins = pinned_requirements(files["requirements.txt"].decode())
    assert {name: version(name).split("+")[0] for name in pins} == pins  # "+cpu" is a local build, not on PyPI
    assert {"torch", "transformers", "setfit", "sentence-transformers"} <= set(pins) and "gradio" not in pins
    assert "spaces" not in pins
    # Nothing outside the folder: each import is Python's own, the folder's, gradio (sdk_version) or pinned.
    distributions = packages_distributions()
    for path in code:
        for name in top_level_imports(files[path]):
            if name in sys.stdlib_module_names or name in {"app", "shared", "gradio", "spaces"}:
                continue  # app.py imports `spaces` only where it is installed: on ZeroGPU
            assert distributions.get(name, [None])[0] in pins, f"{path} imports {name}, which is not pinned"


def top_level_imports(source: bytes) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_zero_gpu_adds_spaces_to_the_requirements(hub, trained, tiny_bert, tmp_path):
    repos = publish_models(hub, trained, tiny_bert)
    result = deploy(hub, "--models", repos["full"], "--local_dir", str(tmp_path / "space"), "--zero_gpu")

    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "space" / "requirements.txt") as f:
        pins = pinned_requirements(f.read())
    # The ZeroGPU platform's client follows the platform; everything else stays pinned as on CPU hardware.
    assert pins.pop("spaces") is None and "torch" in pins
    assert {name: version(name).split("+")[0] for name in pins} == pins


def test_deploy_uploads_exactly_the_folder_it_stages(hub, trained, tiny_bert, tmp_path):
    repos = publish_models(hub, trained, tiny_bert)
    models = f"{repos['full']},{repos['setfit']}@main"
    staged = deploy(hub, "--models", models, "--local_dir", str(tmp_path / "space"))
    uploaded = deploy(hub, "--models", models)

    assert staged.returncode == 0 and uploaded.returncode == 0, staged.stderr[-3000:] + uploaded.stderr[-3000:]
    space = hub.state.repo(f"{USER}/compare", "space")
    assert space.sdk == "gradio" and len(space.commits) == 1
    assert space.commits[0].files == read_folder(tmp_path / "space")
    assert TOKEN not in uploaded.stdout + uploaded.stderr


def test_deploy_refuses_local_folders_and_missing_repos_in_one_error(hub, trained):
    result = deploy(hub, "--models", f"{trained['full']},{USER}/missing")

    assert result.returncode == 2, result.stderr[-3000:]
    assert "a Space cannot read folders on this machine" in result.stderr and f"{USER}/missing" in result.stderr
    assert hub.state.repo(f"{USER}/compare", "space") is None
