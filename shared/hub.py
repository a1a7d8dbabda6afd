"""The Hugging Face Hub: a preflight before training, publishing after it, and loading with safe defaults.

HF_ENDPOINT, HF_HUB_OFFLINE, HF_TOKEN and the stored login are honoured through huggingface_hub itself; a token comes
from nowhere else (a flag would show it in the process list and in the launcher's traceback). It lives in a HubTarget
(never printed: repr=False) and in the client's request headers, nowhere else.
"""

import contextlib
import logging
import os
import shlex
import time
from dataclasses import dataclass, field

import httpx2
from huggingface_hub import HfApi, constants, get_token, hf_hub_download, set_client_factory
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError

# How huggingface_hub builds its own client: ours is built the same way, and the default is put back after use.
from huggingface_hub.utils._http import default_client_factory, hf_request_event_hook
from safetensors import SafetensorError

from shared.args import HubArguments
from shared.errors import InputError, PublishError

logger = logging.getLogger(__name__)

# Worth another try: the Hub is rate limiting or briefly down.
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
# A push gives up when its next wait would end more than this many seconds after its first attempt began.
RETRY_BUDGET_S = 600.0
# The longest wait between two attempts: a longer Retry-After is cut to it, so that one answer cannot use the budget.
MAX_WAIT_S = 60.0
# The wait after the first failure that asks for none; it doubles after each failure.
FIRST_WAIT_S = 2.0
# The preflight's requests are small: a Hub that answers none of them within this long is unreachable for a run.
PREFLIGHT_TIMEOUT_S = 10.0
# An upload may stall longer (a large LFS transfer, a commit of many files), but not for ever.
UPLOAD_TIMEOUT = httpx2.Timeout(300.0, connect=10.0)
# Never published: intermediate checkpoints, the pickled TrainingArguments, logs of trackers.
PUSH_IGNORE = ["checkpoint-*", "checkpoint-*/**", "training_args.bin", "runs/**", "*.pt", "*.pth", ".*"]
# Every remote file: a push deletes those the new folder lacks in the same commit, so a repo never mixes two models.
DELETE_ALL = ["*"]


@dataclass
class HubTarget:
    """A Hub repo that the preflight checked we can write to."""

    repo_id: str
    private: bool
    endpoint: str
    token: str = field(repr=False)
    repo_type: str = "model"


def preflight(
    hub_args: HubArguments,
    output_dir: str,
    space_sdk: str | None = None,
    name_suffix: str = "",
    timeout_s: float = PREFLIGHT_TIMEOUT_S,
) -> HubTarget | None:
    """Check, before any training, that the model can be published where asked; None when no push is wanted.

    Creates the repo (or finds it) and checks that the token may write to it, so that offline mode, an unreachable
    Hub, a bad token, a repo or namespace we cannot write to, or a private run aimed at an existing public repo fails
    now rather than after an hour of training. With `space_sdk` the repo is a Space running that SDK; `name_suffix`
    names a companion repo (`<hub_model_id>-mlm`). No request is retried: nothing is lost by running again.
    """
    if not hub_args.push_to_hub:
        return None
    if constants.is_offline_mode():
        raise InputError("publishing needs the Hub, but offline mode is on (HF_HUB_OFFLINE): unset it to publish")
    token = get_token()
    if not token:
        raise InputError("--push_to_hub needs a Hub token with write access: set HF_TOKEN or run `hf auth login`")
    repo_type = "space" if space_sdk else "model"
    api = HfApi(endpoint=constants.ENDPOINT, token=token)
    try:
        with _hub_client(httpx2.Timeout(timeout_s)):
            user = _whoami(api)
            repo_id = (hub_args.hub_model_id or os.path.basename(os.path.abspath(output_dir))) + name_suffix
            repo_id = repo_id if "/" in repo_id else f"{user}/{repo_id}"
            private = _open_for_writing(api, repo_id, repo_type, user, hub_args.hub_private_repo, space_sdk)
    except _HubUnavailable as err:
        raise InputError(
            f"cannot reach the Hub at {api.endpoint} ({err}): check HF_ENDPOINT and the network, or try again later"
        ) from err
    if hub_args.hub_private_repo and not private:
        raise InputError(
            f"{repo_id} already exists and is public, but --hub_private_repo asks for a private {repo_type}; "
            "pick another --hub_model_id or make the repo private first"
        )
    return HubTarget(repo_id=repo_id, private=private, endpoint=api.endpoint, token=token, repo_type=repo_type)


def _whoami(api: HfApi) -> str:
    try:
        return api.whoami()["name"]
    except HfHubHTTPError as err:
        raise InputError(
            f"the Hub at {api.endpoint} rejected the token ({_status(err)}): set HF_TOKEN to a valid token with "
            "write access, or run `hf auth login`"
        ) from err


def _open_for_writing(
    api: HfApi, repo_id: str, repo_type: str, user: str, private: bool | None, space_sdk: str | None
) -> bool:
    """Create the repo or find it, and check that the token may write to it; returns whether it is private."""
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type, space_sdk=space_sdk)
        is_private = bool(api.repo_info(repo_id, repo_type=repo_type).private)
    except HfHubHTTPError as err:
        raise InputError(
            f"cannot create or open the {repo_type} repo {repo_id} on {api.endpoint} as {user} ({_status(err)}); "
            "check --hub_model_id and that the token may write to that namespace"
        ) from err
    # create_repo(exist_ok=True) also passes for an existing repo the token can only read: ask the Hub's write check.
    try:
        api.auth_check(repo_id, repo_type=repo_type, write=True)
    except HfHubHTTPError as err:
        raise InputError(
            f"{user} can read the {repo_type} repo {repo_id} but may not write to it ({_status(err)}): ask its owner "
            "for write access, use a token that has it, or pick another --hub_model_id"
        ) from err
    return is_private


def push_folder(
    folder: str,
    target: HubTarget,
    commit_message: str,
    ignore_patterns: list[str] = PUSH_IGNORE,
    *,
    budget_s: float = RETRY_BUDGET_S,
    max_wait_s: float = MAX_WAIT_S,
    first_wait_s: float = FIRST_WAIT_S,
) -> str:
    """Make the repo hold exactly `folder` less `ignore_patterns`: one commit that uploads it and deletes every remote
    file it lacks. Returns the commit URL.

    A failure worth another try (429, 5xx, no answer) at any step (preupload, LFS batch, LFS transfer, commit) starts
    the upload again: after the Retry-After the Hub asks for, at most `max_wait_s`, or else after a wait that doubles
    from `first_wait_s`, until the next wait would end past `budget_s`. A commit whose answer was lost is not made
    twice: the next attempt finds every file already there and commits nothing. Any failure ends in a PublishError that
    says how to publish the folder, left as it is, later.
    """
    api = HfApi(endpoint=target.endpoint, token=target.token)
    start, wait, attempt = time.monotonic(), first_wait_s, 1
    with _hub_client(UPLOAD_TIMEOUT):
        while True:
            try:
                commit = api.upload_folder(
                    repo_id=target.repo_id,
                    repo_type=target.repo_type,
                    folder_path=folder,
                    commit_message=commit_message,
                    ignore_patterns=list(ignore_patterns),  # a copy: upload_folder appends its own patterns to it
                    delete_patterns=DELETE_ALL,
                )
                break
            except Exception as err:  # whatever stopped the upload, the user must learn how to publish the model
                elapsed, pause = time.monotonic() - start, _next_wait(err, wait, max_wait_s)
                if pause is None or elapsed + pause > budget_s:
                    command = _upload_command(folder, target, commit_message, ignore_patterns)
                    tries = f" after {attempt} attempts in {elapsed:.0f} s" if attempt > 1 else ""
                    raise PublishError(
                        f"publishing {folder} to {target.repo_id} failed{tries} ({_status(err)}); the model is saved "
                        f"in {folder}: publish it later with `{command}`"
                    ) from err
                logger.warning("publishing to %s: %s; trying again in %.1f s", target.repo_id, _status(err), pause)
                time.sleep(pause)
                wait, attempt = wait * 2, attempt + 1
    logger.info("published %s to %s", folder, commit.commit_url)
    return commit.commit_url


def _upload_command(folder: str, target: HubTarget, commit_message: str, ignore_patterns: list[str]) -> str:
    """The `hf upload` command that does what push_folder does: the same files, the same deletions, one commit."""
    args = ["hf", "upload", target.repo_id, folder, "."]
    args += ["--repo-type", target.repo_type] if target.repo_type != "model" else []
    args += [arg for pattern in ignore_patterns for arg in ("--exclude", pattern)]
    args += [arg for pattern in DELETE_ALL for arg in ("--delete", pattern)]
    return shlex.join([*args, "--commit-message", commit_message])


class _HubUnavailable(Exception):
    """The Hub did not answer, or answered that it cannot now (RETRY_STATUS): worth another try later."""

    def __init__(self, cause: str, retry_after_s: float | None = None):
        super().__init__(cause)
        self.retry_after_s = retry_after_s


class _HubClient(httpx2.Client):
    """The HTTP client of huggingface_hub while this module talks to the Hub.

    huggingface_hub retries some requests by itself: preupload, the LFS batch and the LFS transfer up to five times,
    waiting as long as any Retry-After asks; a commit not at all, or (with Xet) by posting it again, which makes a
    second commit when the first one's answer was lost. This client raises _HubUnavailable on every answer worth
    another try before huggingface_hub sees it, which leaves one retry policy, push_folder's, for every step. And every
    request times out: huggingface_hub's default client waits for ever on a Hub that does not answer.
    """

    def __init__(self, timeout: httpx2.Timeout):
        # As default_client_factory builds it: the request hook enforces HF_HUB_OFFLINE and tags each request.
        super().__init__(event_hooks={"request": [hf_request_event_hook]}, follow_redirects=True, timeout=timeout)

    def send(self, request: httpx2.Request, **kwargs) -> httpx2.Response:
        if not any(request.extensions.get("timeout", {}).values()):  # some calls ask for no timeout at all
            request.extensions["timeout"] = self.timeout.as_dict()
        try:
            response = super().send(request, **kwargs)
        except httpx2.TransportError as err:
            raise _HubUnavailable(f"{type(err).__name__}: {err}") from err
        if response.status_code in RETRY_STATUS:
            response.read()
            response.close()
            message = response.headers.get("X-Error-Message") or response.reason_phrase
            raise _HubUnavailable(f"{response.status_code} {message}", _retry_after_s(response))
        return response


@contextlib.contextmanager
def _hub_client(timeout: httpx2.Timeout):
    """huggingface_hub talks through a _HubClient inside the block, through its default client again after it."""
    set_client_factory(lambda: _HubClient(timeout))
    try:
        yield
    finally:
        set_client_factory(default_client_factory)


def _retry_after_s(response: httpx2.Response) -> float | None:
    """The Retry-After header in seconds; None without one, or with its HTTP-date form (the Hub sends seconds)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _next_wait(err: Exception, backoff_s: float, max_wait_s: float) -> float | None:
    """How long to wait before trying again after `err`; None when another try cannot help."""
    unavailable = next((e for e in _causes(err) if isinstance(e, _HubUnavailable)), None)
    if unavailable is None:
        return None
    asked = unavailable.retry_after_s
    return min(backoff_s if asked is None else asked, max_wait_s)


def _causes(err: BaseException):
    """`err` and the exceptions it was raised from: huggingface_hub wraps a failed LFS transfer in a RuntimeError."""
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def _status(err: Exception) -> str:
    """A short cause for messages: the HTTP status and the server's own message, or what stopped the request."""
    for cause in _causes(err):
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            message = cause.server_message or cause.response.reason_phrase
            return f"{cause.response.status_code} {message}".strip()
        if isinstance(cause, _HubUnavailable):
            return str(cause)
    return str(err) or type(err).__name__


# Every model loads in fp32, whatever dtype its checkpoint stores (transformers 5 and sentence-transformers load a
# checkpoint in its stored dtype): training an fp16 copy crashes on a CPU and loses AdamW's small steps to fp16
# rounding on a GPU; serving one on a CPU is slow, and int8 quantization starts from fp32. bf16 and fp16 compute
# come from autocast.
MODEL_DTYPE = "float32"


def load_pretrained(auto_class, name_or_path: str, revision: str = "main", **kwargs):
    """`auto_class.from_pretrained` with safe defaults: safetensors weights only, no remote code; models in fp32.

    A missing repo or folder, a repo without safetensors weights, damaged weights, weights of other shapes than the
    config says, or a tokenizer without its files becomes one InputError.
    """
    _check_path(name_or_path)
    is_tokenizer = auto_class.__name__.endswith("Tokenizer")
    is_model = not is_tokenizer and not auto_class.__name__.endswith("Config")
    safe = {"use_safetensors": True, "dtype": MODEL_DTYPE} if is_model else {}
    with _loading_errors(name_or_path, auto_class.__name__):
        loaded = auto_class.from_pretrained(name_or_path, revision=revision, trust_remote_code=False, **safe, **kwargs)
    if is_tokenizer:
        check_vocabulary(loaded, name_or_path)
    return loaded


def load_sentence_transformer(name_or_path: str, revision: str = "main"):
    """A sentence-transformers model with the same safe defaults: safetensors weights, no remote code, fp32.

    A plain transformers encoder gets mean pooling, which is how SetFit starts from one.
    """
    from sentence_transformers import SentenceTransformer  # heavy; only the SetFit paths need it

    _check_path(name_or_path)
    with _loading_errors(name_or_path, "sentence-transformers"):
        model = SentenceTransformer(
            name_or_path,
            revision=revision,
            trust_remote_code=False,
            model_kwargs={"use_safetensors": True, "dtype": MODEL_DTYPE},
        )
    check_vocabulary(model.tokenizer, name_or_path)
    return model


# What makes a Hub repo a model a trainer can start from: a transformers config.json or, for SetFit, a
# sentence-transformers model's modules.json (its older layout keeps the encoder's config.json in a subfolder).
TRANSFORMERS_FILES = ("config.json",)
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "config.json")


def check_model_source(name_or_path: str, revision: str = "main", files: tuple[str, ...] = TRANSFORMERS_FILES) -> None:
    """Before a trainer clears or trains anything: the model it names exists. A folder is enough here; of a Hub repo
    the first of `files` that it has is downloaded (small, and cached for the load that follows), so that a mistyped
    repo id or revision fails before --overwrite_output_dir has cleared the last run."""
    _check_path(name_or_path)
    if os.path.isdir(name_or_path):
        return
    with _loading_errors(name_or_path, "huggingface_hub"):
        for filename in files:
            try:
                hf_hub_download(name_or_path, filename, revision=revision)
                return
            except RemoteEntryNotFoundError:
                continue
    raise InputError(f"could not load {name_or_path!r}: the repo has no {' or '.join(files)}")


def _check_path(name_or_path: str) -> None:
    """A model named by a path (absolute, or from ./ or ../) must be a folder: otherwise a mistyped path reads as a
    malformed repo id."""
    if (os.path.isabs(name_or_path) or name_or_path.startswith(("./", "../"))) and not os.path.isdir(name_or_path):
        raise InputError(f"could not load {name_or_path!r}: there is no such folder")


def check_vocabulary(tokenizer, name_or_path: str) -> None:
    """transformers 5 builds a tokenizer for a folder without tokenizer files too: one that knows its special tokens
    only, so that every word becomes [UNK] and a model trains or predicts on nothing, without an error."""
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        raise InputError(
            f"could not load {name_or_path!r}: it has no tokenizer files (tokenizer.json, or vocab.txt and the like), "
            "only a model; save the tokenizer beside the weights"
        )


@contextlib.contextmanager
def _loading_errors(name_or_path: str, loader: str):
    """What can be wrong with the files of a model being loaded, as one InputError naming the model."""
    try:
        yield
    except SafetensorError as err:
        raise InputError(f"could not load {name_or_path!r}: its safetensors weights are damaged ({err})") from err
    except RuntimeError as err:
        if "ignore_mismatched_sizes" not in str(err):  # transformers' error for weights of another shape
            raise
        raise InputError(
            f"could not load {name_or_path!r} with {loader}: some of its weights have other shapes than its "
            "config.json says (a classification head for another number of labels?)"
        ) from err
    except (OSError, ValueError) as err:
        raise InputError(f"could not load {name_or_path!r} with {loader}: {err}") from err
