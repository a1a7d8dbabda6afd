"""Deploy the comparison app to a Hugging Face Space: app.py, its requirements, a models.yaml listing the models,
and a copy of the project's shared/ package, uploaded as one commit.

    python space/deploy.py --space_id you/compare-classifiers --models you/bert-full,you/minilm-setfit [--private]

Needs a token with write access (HF_TOKEN or `hf auth login`); HF_ENDPOINT points it at another Hub.
"""

import argparse
import logging
import os
import shutil
import tempfile

import yaml
from huggingface_hub import SpaceCard

from shared.args import HubArguments
from shared.errors import InputError, exit_on_cli_error
from shared.hub import preflight, push_folder

SPACE_DIR = os.path.dirname(os.path.abspath(__file__))
SHARED_DIR = os.path.join(os.path.dirname(SPACE_DIR), "shared")
APP_FILES = ["app.py", "requirements.txt", "README.md"]


def stage(folder: str, models: list[str]) -> None:
    """Lay out the Space repo in `folder`: the app files, models.yaml, shared/, and the models in the card."""
    for name in APP_FILES:
        shutil.copy(os.path.join(SPACE_DIR, name), folder)
    shutil.copytree(SHARED_DIR, os.path.join(folder, "shared"), ignore=shutil.ignore_patterns("__pycache__"))
    entries = [
        {"id": source, "revision": revision or None} for source, _, revision in (m.partition("@") for m in models)
    ]
    with open(os.path.join(folder, "models.yaml"), "w") as f:
        yaml.safe_dump({"models": [{k: v for k, v in e.items() if v} for e in entries]}, f, sort_keys=False)
    # The card's `models:` links the Space to the models' pages on the Hub.
    card = SpaceCard.load(os.path.join(folder, "README.md"))
    card.data.models = [e["id"] for e in entries]
    card.save(os.path.join(folder, "README.md"))


def deploy(space_id: str, models: list[str], private: bool | None = None) -> str:
    """Create (or reuse) the Space and upload the app; returns the commit URL."""
    local = [m for m in models if os.path.exists(m.partition("@")[0])]
    if not models or local:
        raise InputError(
            "--models needs Hub repo ids: a Space cannot read folders on this machine"
            + (f" ({', '.join(local)})" if local else "")
        )
    target = preflight(HubArguments(push_to_hub=True, hub_model_id=space_id, hub_private_repo=private), ".", "gradio")
    with tempfile.TemporaryDirectory() as folder:
        stage(folder, models)
        return push_folder(folder, target, commit_message=f"Deploy the comparison app for {len(models)} models")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space_id", required=True, help="The Space repo, namespace/name.")
    parser.add_argument("--models", required=True, help="Comma-separated model repo ids, each optionally @revision.")
    parser.add_argument("--private", action="store_true", default=None, help="Create the Space private.")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("shared").setLevel(logging.INFO)
    args = parse_args()
    with exit_on_cli_error():
        print(deploy(args.space_id, [m.strip() for m in args.models.split(",") if m.strip()], args.private))
