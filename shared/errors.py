"""Errors that end a run with one clear message instead of a traceback, and how the command line reports them."""

import contextlib
import logging
import os
import signal
import sys


class CliError(Exception):
    """An error whose message alone tells the user what happened and what to do."""

    # Whether every process of a launch meets it alike, so that the first one alone need say it.
    same_on_every_process = False

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(f"- {p}" for p in self.problems) if len(self.problems) > 1 else self.problems[0])


class InputError(CliError, ValueError):
    """Bad input: a flag, a column, a value, a token. Raised before any expensive work starts."""

    same_on_every_process = True  # every process reads the same flags and data


class PublishError(CliError, RuntimeError):
    """Publishing failed after training; the trained model is still on disk."""


@contextlib.contextmanager
def exit_on_cli_error():
    """Print a CliError as `error: ...` and exit: 2 for bad input (as argparse does for a bad flag), else 1.
    An error that every process of a launch meets alike is said once, by the first process."""
    try:
        yield
    except CliError as err:
        if is_main_process() or not err.same_on_every_process:
            say(f"error: {err}" if len(err.problems) == 1 else f"error:\n{err}")
        sys.exit(2 if isinstance(err, InputError) else 1)
    except KeyboardInterrupt:
        # Ctrl-C outside training (which stops at a step's end, shared.training): loading, evaluating, saving,
        # publishing. The terminal sends it to every process of a launch, and torchrun passes it on once more: that
        # second one, landing in the exit's cleanup, printed tracebacks of its own. The first process says it once.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if is_main_process():
            say("error: stopped by Ctrl-C (SIGINT) before the run finished")
        sys.exit(128 + signal.SIGINT)


def say(line: str) -> None:
    """Write a line to stderr in one write. print() writes the newline apart, and the processes of a launch share
    stderr: another process's line could land between the two, on the end of this one."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def is_main_process() -> bool:
    """Whether this is the first process of a launch (or the only one), from the launcher's RANK: usable before
    torch.distributed is set up."""
    return int(os.environ.get("RANK", "0")) == 0


def configure_cli_logging(method: str) -> None:
    """What a trainer's command line logs: every library's warnings, and the progress of shared and of `method`.

    huggingface_hub gives its logger a handler of its own and lets records reach ours too, which printed each of its
    warnings (a retried download, say) twice: it keeps its own handler only. The other processes of a launch load
    the same model as the first, and printed transformers' report of its missing and unexpected weights once each:
    they say only errors, as their Trainers keep them (RecipeTrainingArguments.log_level_replica).
    """
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as transformers_logging

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    for name in ("shared", method):
        logging.getLogger(name).setLevel(logging.INFO)
    hub_logging.disable_propagation()
    if not is_main_process():
        transformers_logging.set_verbosity_error()
