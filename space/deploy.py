"""Deploy the comparison app to a Hugging Face Space, or only stage the folder that would be uploaded.

    python space/deploy.py --space_id you/compare-classifiers --models you/bert-full,you/minilm-setfit [--private]
    python space/deploy.py --space_id you/compare-classifiers --models ... --local_dir build/space   # no upload
    python space/deploy.py --space_id you/compare-classifiers --models ... --zero_gpu   # for ZeroGPU hardware

The staged folder is the Space, and runs with nothing but its own files and requirements:
- app.py, and the modules of shared/ that it imports, copied from this checkout now (so they cannot drift);
- requirements.txt: each library that those files import, pinned to the version installed here, which the tests
  ran with; gradio comes from the card's sdk_version, and `spaces` is added for ZeroGPU;
- models.yaml: each model pinned to the commit that its revision names now, and so are the fill-mask encoders
  of MLM-adapted models;
- README.md: the Space's card (sdk, sdk_version, python_version, app_file, short_description, license, models),
  whose preload_from_hub lists each model at its commit with exactly the files the app loads, so that the Space
  downloads them while it builds instead of while a visitor waits.

Models must be Hub repos: a Space cannot read this machine's folders. Uploading needs a token with write access
(HF_TOKEN or `hf auth login`); reading public models needs none. HF_ENDPOINT points it at another Hub.
"""

import argparse
import ast
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import packages_distributions, version

import httpx2
import yaml
from huggingface_hub import HfApi, SpaceCard
from huggingface_hub.errors import HfHubHTTPError, HFValidationError

from shared.args import HubArguments
from shared.errors import InputError, exit_on_cli_error
from shared.hub import preflight, push_folder
from shared.inference import files_to_load, fill_mask_encoders
from shared.results import RESULTS_FILE

logger = logging.getLogger("deploy")

SPACE_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(SPACE_DIR)
APP_FILE = "app.py"


@dataclass
class Pinned:
    """A Hub repo at the commit its revision named at deploy time, and the files of it that the app loads."""

    repo_id: str
    sha: str
    files: list[str]

    @property
    def preload(self) -> str:
        """An entry of the card's preload_from_hub: repo id, comma-separated files, commit."""
        return f"{self.repo_id} {','.join(self.files)} {self.sha}"


def deploy(
    space_id: str, models: list[str], private: bool | None = None, zero_gpu: bool = False, local_dir: str | None = None
) -> str:
    """Stage the Space in `local_dir` and return its path; without `local_dir`, stage it in a temporary folder,
    upload that folder as one commit and return the commit URL."""
    if local_dir and os.path.isdir(local_dir) and os.listdir(local_dir):
        raise InputError(f"--local_dir {local_dir} is not empty: the staged Space must hold only its own files")
    api = HfApi()
    classifiers = pin_models(api, models)
    encoders = pin_encoders(api, classifiers)
    if local_dir:
        os.makedirs(local_dir, exist_ok=True)
        stage(local_dir, classifiers, encoders, zero_gpu)
        return local_dir
    target = preflight(HubArguments(push_to_hub=True, hub_model_id=space_id, hub_private_repo=private), ".", "gradio")
    with tempfile.TemporaryDirectory() as folder:
        stage(folder, classifiers, encoders, zero_gpu)
        return push_folder(folder, target, commit_message=f"Deploy the comparison app for {len(models)} models")


def pin_models(api: HfApi, models: list[str]) -> list[Pinned]:
    """Each `id[@revision]` at the commit it names now; every entry that cannot be pinned is reported at once."""
    if not models:
        raise InputError("--models needs at least one Hub repo id")
    pinned, problems = [], []
    for entry in models:
        repo_id, _, revision = entry.partition("@")
        if os.path.exists(repo_id):
            problems.append(f"{entry}: a Space cannot read folders on this machine; publish it and pass its repo id")
            continue
        try:
            pinned.append(pin(api, repo_id, revision or None))
        except (HfHubHTTPError, HFValidationError, httpx2.TransportError) as err:
            problems.append(f"{entry}: cannot resolve it on {api.endpoint} ({str(err).splitlines()[0]})")
    if problems:
        raise InputError(problems)
    return pinned


def pin_encoders(api: HfApi, classifiers: list[Pinned]) -> list[Pinned]:
    """The base and adapted encoders that MLM-adapted classifiers name in their results.json, pinned the same way.
    One that is not on the Hub (a base model from a local folder) is left out: the Space says it could not load."""
    sources = []
    for model in classifiers:
        if RESULTS_FILE in model.files:
            with open(api.hf_hub_download(model.repo_id, RESULTS_FILE, revision=model.sha)) as f:
                sources += [s for s in fill_mask_encoders(json.load(f)) or () if s and s not in sources]
    pinned = []
    for source in sources:
        try:
            pinned.append(pin(api, source))
        except (HfHubHTTPError, HFValidationError, httpx2.TransportError) as err:
            logger.warning(
                "fill-mask will not work for %s: it is not on the Hub (%s)", source, str(err).splitlines()[0]
            )
    return pinned


def pin(api: HfApi, repo_id: str, revision: str | None = None) -> Pinned:
    info = api.model_info(repo_id, revision=revision)
    return Pinned(repo_id, info.sha, files_to_load([sibling.rfilename for sibling in info.siblings]))


def stage(folder: str, classifiers: list[Pinned], encoders: list[Pinned], zero_gpu: bool = False) -> None:
    """Lay out the Space in `folder`: app.py and its part of shared/, models.yaml, requirements.txt, README.md."""
    app = os.path.join(SPACE_DIR, APP_FILE)
    shutil.copy(app, folder)
    for relative in shared_files(app):
        os.makedirs(os.path.join(folder, os.path.dirname(relative)), exist_ok=True)
        shutil.copy(os.path.join(ROOT, relative), os.path.join(folder, relative))
    write_models_file(os.path.join(folder, "models.yaml"), classifiers, encoders)
    with open(os.path.join(folder, "requirements.txt"), "w") as f:
        f.write("# Written by space/deploy.py: the versions the app ran with. gradio: sdk_version in README.md.\n")
        f.write("".join(f"{line}\n" for line in requirements(folder, zero_gpu)))
    write_card(os.path.join(folder, "README.md"), [*classifiers, *encoders])


def shared_files(path: str) -> list[str]:
    """The files of shared/ that a Python file needs, relative to the project root: the package's __init__.py and
    each module that the file imports, directly or through one another."""
    needed, todo = {os.path.join("shared", "__init__.py")}, [path]
    while todo:
        for name in imported_modules(todo.pop()):
            relative = os.path.join(*name.split(".")) + ".py"
            if name.startswith("shared.") and relative not in needed and os.path.exists(os.path.join(ROOT, relative)):
                needed.add(relative)
                todo.append(os.path.join(ROOT, relative))
    return sorted(needed)


def imported_modules(path: str) -> set[str]:
    """Every absolute import in a Python file, anywhere in it (functions import heavy libraries lazily); for
    `from a import b`, both `a` and `a.b`, since b may be a module."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
    return names


def requirements(folder: str, zero_gpu: bool) -> list[str]:
    """`name==version` for each library that the folder's Python files import, as installed here. gradio is left
    out (the card's sdk_version installs it); `spaces`, the client of the ZeroGPU platform, follows the platform."""
    local = {name.removesuffix(".py") for name in os.listdir(folder)}
    imported = {
        name.split(".")[0]
        for directory, _, files in os.walk(folder)
        for file in files
        if file.endswith(".py")
        for name in imported_modules(os.path.join(directory, file))
    }
    libraries = sorted(imported - local - set(sys.stdlib_module_names) - {"gradio", "spaces"})
    distributions = packages_distributions()
    missing = [name for name in libraries if name not in distributions]
    if missing:
        raise InputError(f"the app imports {', '.join(missing)}, which is not installed here; install it and test")
    # A local version label (torch's "+cpu") names a build that PyPI does not have.
    pins = {f"{dist}=={version(dist).split('+')[0]}" for name in libraries for dist in distributions[name][:1]}
    return sorted(pins, key=str.lower) + (["spaces"] if zero_gpu else [])


def write_models_file(path: str, classifiers: list[Pinned], encoders: list[Pinned]) -> None:
    content = {"models": [{"id": p.repo_id, "revision": p.sha} for p in classifiers]}
    if encoders:
        content["encoders"] = [{"id": p.repo_id, "revision": p.sha} for p in encoders]
    with open(path, "w") as f:
        f.write("# Written by space/deploy.py: every model at the commit its revision named at deploy time.\n")
        yaml.safe_dump(content, f, sort_keys=False)


def write_card(path: str, pinned: list[Pinned]) -> None:
    """space/README.md with what only deploy time knows: the versions, and the models with their files."""
    card = SpaceCard.load(os.path.join(SPACE_DIR, "README.md"))
    card.data.sdk_version = version("gradio")
    card.data.python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    card.data.models = [p.repo_id for p in pinned]  # links the Space to the models' pages on the Hub
    card.data.preload_from_hub = [p.preload for p in pinned]
    card.save(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space_id", required=True, help="The Space repo, namespace/name.")
    parser.add_argument("--models", required=True, help="Comma-separated model repo ids, each optionally @revision.")
    parser.add_argument("--private", action="store_true", default=None, help="Create the Space private.")
    parser.add_argument(
        "--zero_gpu", action="store_true", help="Run on ZeroGPU hardware: adds `spaces` to requirements.txt."
    )
    parser.add_argument("--local_dir", help="Write the Space's folder here (new or empty) instead of uploading it.")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("shared").setLevel(logging.INFO)
    args = parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    with exit_on_cli_error():
        print(deploy(args.space_id, models, args.private, args.zero_gpu, args.local_dir))
