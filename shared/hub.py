"""The Hugging Face Hub: a preflight before training, publishing after it, and loading with safe defaults.

HF_ENDPOINT and HF_TOKEN are honoured through huggingface_hub itself. The token lives in a HubTarget
(never printed: repr=False) and in the client's request headers, nowhere else.
"""

import logging
import os
import time
from dataclasses import dataclass, field

import httpx2
from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError

from shared.args import HubArguments
from shared.errors import InputError, PublishError

logger = logging.getLogger(__name__)

# Worth another try: the Hub is rate limiting or briefly down.
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
# Never published: intermediate checkpoints, the pickled TrainingArguments, logs of trackers.
PUSH_IGNORE = ["checkpoint-*", "checkpoint-*/**", "training_args.bin", "runs/**", "*.pt", "*.pth", ".*"]


@dataclass
class HubTarget:
    """A Hub repo that the preflight checked we can write to."""

    repo_id: str
    private: bool
    endpoint: str
    token: str = field(repr=False)
    repo_type: str = "model"


def preflight(
    hub_args: HubArguments, output_dir: str, space_sdk: str | None = None, name_suffix: str = ""
) -> HubTarget | None:
    """Check, before any training, that the model can be published where asked; None when no push is wanted.

    Creates the repo (or finds it) so that a bad token, a namespace we cannot write to, or a private run
    aimed at an existing public repo fails now rather than after an hour of training. With `space_sdk` the repo
    is a Space running that SDK; `name_suffix` names a companion repo (`<hub_model_id>-mlm`).
    """
    repo_type = "space" if space_sdk else "model"
    if not hub_args.push_to_hub:
        return None
    endpoint = constants.ENDPOINT
    token = get_token()
    if not token:
        raise InputError("--push_to_hub needs a Hub token with write access: set HF_TOKEN or run `hf auth login`")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        user = api.whoami()["name"]
    except HfHubHTTPError as err:
        raise InputError(
            f"the Hub at {endpoint} rejected the token ({_status(err)}): set HF_TOKEN to a valid token with "
            "write access, or run `hf auth login`"
        ) from err
    except httpx2.TransportError as err:
        raise InputError(f"cannot reach the Hub at {endpoint} ({err}); check HF_ENDPOINT and the network") from err

    repo_id = (hub_args.hub_model_id or os.path.basename(os.path.abspath(output_dir))) + name_suffix
    repo_id = repo_id if "/" in repo_id else f"{user}/{repo_id}"
    try:
        api.create_repo(
            repo_id, private=hub_args.hub_private_repo, exist_ok=True, repo_type=repo_type, space_sdk=space_sdk
        )
        private = bool(api.repo_info(repo_id, repo_type=repo_type).private)
    except HfHubHTTPError as err:
        raise InputError(
            f"cannot create or open the {repo_type} repo {repo_id} on {endpoint} as {user} ({_status(err)}); "
            "check --hub_model_id and that the token may write to that namespace"
        ) from err
    if hub_args.hub_private_repo and not private:
        raise InputError(
            f"{repo_id} already exists and is public, but --hub_private_repo asks for a private {repo_type}; "
            "pick another --hub_model_id or make the repo private first"
        )
    return HubTarget(repo_id=repo_id, private=private, endpoint=endpoint, token=token, repo_type=repo_type)


def push_folder(
    folder: str,
    target: HubTarget,
    commit_message: str,
    ignore_patterns: list[str] = PUSH_IGNORE,
    attempts: int = 4,
    first_wait_s: float = 2.0,
) -> str:
    """Upload `folder` as one commit, retrying with exponential backoff while the Hub answers 429 or 5xx.

    Returns the commit URL. On failure the folder is left as it is and the error says how to push it later.
    """
    api = HfApi(endpoint=target.endpoint, token=target.token)
    for attempt in range(1, attempts + 1):
        try:
            commit = api.upload_folder(
                repo_id=target.repo_id,
                repo_type=target.repo_type,
                folder_path=folder,
                commit_message=commit_message,
                ignore_patterns=ignore_patterns,
            )
            logger.info("published %s to %s", folder, commit.commit_url)
            return commit.commit_url
        except (HfHubHTTPError, httpx2.TransportError) as err:
            retryable = not isinstance(err, HfHubHTTPError) or _status_code(err) in RETRY_STATUS
            if not retryable or attempt == attempts:
                kind = "" if target.repo_type == "model" else f" --repo-type {target.repo_type}"
                raise PublishError(
                    f"publishing {folder} to {target.repo_id} failed ({_status(err)}); the model is saved in "
                    f"{folder}, publish it later with `hf upload {target.repo_id} {folder} .{kind}`"
                ) from err
            wait = first_wait_s * 2 ** (attempt - 1)
            logger.warning("the Hub answered %s; trying again in %.0f s", _status(err), wait)
            time.sleep(wait)


def load_pretrained(auto_class, name_or_path: str, revision: str = "main", **kwargs):
    """`auto_class.from_pretrained` with safe defaults: safetensors weights only, no remote code.

    A missing repo, a repo without safetensors weights or an unreadable folder becomes one InputError.
    """
    is_model = not auto_class.__name__.endswith(("Tokenizer", "Config"))
    safe = {"use_safetensors": True} if is_model else {}
    try:
        return auto_class.from_pretrained(name_or_path, revision=revision, trust_remote_code=False, **safe, **kwargs)
    except (OSError, ValueError) as err:
        raise InputError(f"could not load {name_or_path!r} with {auto_class.__name__}: {err}") from err


def _status_code(err: HfHubHTTPError) -> int | None:
    return err.response.status_code if err.response is not None else None


def _status(err: Exception) -> str:
    """A short cause for messages: the HTTP status and the server's own message, or the transport error."""
    if isinstance(err, HfHubHTTPError) and err.response is not None:
        message = err.server_message or err.response.reason_phrase
        return f"{err.response.status_code} {message}".strip()
    return str(err)


def load_sentence_transformer(name_or_path: str, revision: str = "main"):
    """A sentence-transformers model with the same safe defaults: safetensors weights, no remote code.

    A plain transformers encoder gets mean pooling, which is how SetFit starts from one.
    """
    from sentence_transformers import SentenceTransformer  # heavy; only the SetFit paths need it

    try:
        return SentenceTransformer(
            name_or_path, revision=revision, trust_remote_code=False, model_kwargs={"use_safetensors": True}
        )
    except (OSError, ValueError) as err:
        raise InputError(f"could not load {name_or_path!r} as a sentence-transformers model: {err}") from err
