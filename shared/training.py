"""What every training run needs, whichever trainer drives it: an output folder that holds one run, checkpoints to
resume from, and guards that stop a run that diverges or is told to stop before anything is saved or published.

The guards are one Trainer callback, so transformers' Trainer (full fine-tuning, layer freezing, both phases of
MLM-then-classify) and the sentence-transformers Trainer inside setfit (SetFit's body) get the same ones.
"""

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import sys
import time

import torch
import torch.distributed as dist
from safetensors import safe_open
from transformers import (
    EarlyStoppingCallback,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerState,
)
from transformers.trainer_utils import SaveStrategy

from shared.args import hub_args_from, strategy_name
from shared.disk import full_folder, out_of_space, room_left, shortfall
from shared.errors import CliError, InputError, is_main_process, say
from shared.hub import HubTarget, preflight
from shared.metrics import MULTI_LABEL
from shared.positions import longest_input

logger = logging.getLogger(__name__)

# Written into every checkpoint: which method (and phase of it) wrote it, so a resume never continues another run.
RUN_INFO = "run_info.json"
# A checkpoint is complete once trainer_state.json is there: the Trainer writes it after the weights and the
# optimizer, scheduler and RNG states.
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


class TrainingStopped(CliError, RuntimeError):
    """Training ended before its end: it diverged or was told to stop. Nothing was saved as the final model."""

    # The processes agree on a stop (TrainingGuard) and see the same gradients and weights.
    same_on_every_process = True


def start_run(training_args, run: dict) -> HubTarget | None:
    """The last checks before any model loads, once the data and the model's source are checked, in the order that
    leaves nothing behind when one fails: output_dir can hold this run (check_output_dir); the checkpoint that
    --resume_from_checkpoint names (`latest`: the newest complete one in output_dir; its path replaces the flag's
    value); the Hub preflight, which creates the repo to publish to; and last, --overwrite_output_dir clears
    output_dir. Returns where to publish, None for nowhere."""
    output_dir, overwrite = training_args.output_dir, training_args.overwrite_output_dir
    resuming = bool(training_args.resume_from_checkpoint)  # resolved to a checkpoint, or refused, below
    check_output_dir(output_dir, overwrite, resuming)
    training_args.resume_from_checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, output_dir, run)
    target = preflight(hub_args_from(training_args), output_dir)
    prepare_output_dir(output_dir, overwrite, resuming)
    return target


# ---- the output folder -------------------------------------------------------------------------------------------


def check_output_dir(output_dir: str, overwrite: bool, resuming: bool, keep: tuple[str, ...] = ()) -> list[str]:
    """Refuse an output_dir that cannot hold this run only: a file, or a folder holding files of another run, unless
    `overwrite` (and never a project or home folder). A resumed run keeps its folder as it is: its checkpoints, and
    whatever the resumed run will replace. `keep` names entries that belong to this run already (an encoder adapted
    by an earlier phase). Returns the entries that `overwrite` is to clear."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise InputError(f"--output_dir {output_dir} is a file; name a folder")
    if resuming or not os.path.isdir(output_dir):
        return []
    others = sorted(set(os.listdir(output_dir)) - set(keep))
    if others and not overwrite:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise InputError(
            f"--output_dir {output_dir} already holds files ({shown}); pass --overwrite_output_dir to clear it first, "
            "or choose another folder"
        )
    if others:
        _refuse_to_clear(output_dir)
    return others


def prepare_output_dir(output_dir: str, overwrite: bool, resuming: bool, keep: tuple[str, ...] = ()) -> None:
    """Make output_dir hold this run only (check_output_dir's rules): --overwrite_output_dir clears it here."""
    others = check_output_dir(output_dir, overwrite, resuming, keep)
    if others and is_main_process():
        logger.info("--overwrite_output_dir: clearing %s", output_dir)
        for entry in others:
            path = os.path.join(output_dir, entry)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def _refuse_to_clear(output_dir: str) -> None:
    """A slip of --output_dir must never wipe a project or a home folder."""
    path = os.path.realpath(output_dir)
    precious = {os.path.realpath(p) for p in ("/", os.path.expanduser("~"), os.getcwd())}
    if path in precious or os.path.exists(os.path.join(path, ".git")):
        raise InputError(f"--overwrite_output_dir will not clear {output_dir}: it is {path}; choose a run folder")


# ---- checkpoints -------------------------------------------------------------------------------------------------


def resolve_checkpoint(resume_from_checkpoint: str | None, search_dir: str, run: dict) -> str | None:
    """The checkpoint to resume from: the path given, or with `latest` the newest complete one in `search_dir`.

    `run` says which method (and phase) this is; a checkpoint written by another is refused. Every problem is an
    InputError naming the checkpoint, raised before any model is loaded.
    """
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        for path in checkpoints_in(search_dir):
            if not _missing(path):
                _check_run(path, run)
                return path
            logger.warning("skipping incomplete checkpoint %s (%s missing)", path, _missing(path))
        raise InputError(f"--resume_from_checkpoint latest: no complete checkpoint in {search_dir}")
    path = resume_from_checkpoint
    if not os.path.isdir(path):
        raise InputError(f"--resume_from_checkpoint {path} does not exist")
    missing = _missing(path)
    if missing:
        raise InputError(f"--resume_from_checkpoint {path} is not a complete checkpoint: {missing} missing")
    _check_run(path, run)
    return path


def check_checkpoint_fits(
    checkpoint: str | None, model: torch.nn.Module, name: str, labels: list[str] | None = None
) -> None:
    """A resumed run goes on from the checkpoint's weights: they must be weights of this run's model (`name`) and,
    for a classifier, of this run's labels. Otherwise the Trainer failed deep inside torch (other shapes), loaded
    none of them (another architecture's names), or, with as many labels of other names, trained on with each
    label's weights read as another's. Checked once the model is built, before training."""
    if not checkpoint:
        return
    saved_config = _read_json(os.path.join(checkpoint, "config.json"))
    if labels is not None and saved_config is not None:
        _check_labels(checkpoint, saved_config, labels, model.config.problem_type == MULTI_LABEL)
    saved, own = _saved_shapes(checkpoint), {key: tuple(value.shape) for key, value in model.state_dict().items()}
    common = saved.keys() & own.keys()
    other = sorted(key for key in common if saved[key] != own[key])
    if common and not other:
        return
    kind = f" (a {saved_config['model_type']})" if saved_config and "model_type" in saved_config else ""
    what = f"its {other[0]} is {list(saved[other[0]])}, not {list(own[other[0]])}" if other else "no weight in common"
    raise InputError(
        f"--resume_from_checkpoint {checkpoint} holds another model{kind} than {name}: {what}; resume with the model "
        "it was trained from"
    )


def _check_labels(checkpoint: str, saved_config: dict, labels: list[str], multi_label: bool) -> None:
    id2label = saved_config.get("id2label", {})
    saved_labels = [id2label[key] for key in sorted(id2label, key=int)]
    saved_multi_label = saved_config.get("problem_type") == MULTI_LABEL
    if (saved_labels, saved_multi_label) == (labels, multi_label):
        return
    kind = ("one label per text", "sets of labels")
    raise InputError(
        f"--resume_from_checkpoint {checkpoint} was trained for {saved_labels} ({kind[saved_multi_label]}), but this "
        f"run's data has {labels} ({kind[multi_label]}); resume with the data it was trained on, or start a new run"
    )


def _saved_shapes(checkpoint: str) -> dict[str, tuple[int, ...]]:
    """Each weight's shape in a checkpoint, from its safetensors headers (no tensor is read)."""
    index = _read_json(os.path.join(checkpoint, "model.safetensors.index.json"))
    files = sorted(set(index["weight_map"].values())) if index else ["model.safetensors"]
    shapes = {}
    for file in files:
        with safe_open(os.path.join(checkpoint, file), framework="pt") as f:
            shapes.update({key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})
    return shapes


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def checkpoints_in(folder: str) -> list[str]:
    """The paths of the Trainer's checkpoint-<step> folders in `folder`, the newest first, complete or not."""
    if not os.path.isdir(folder):
        return []
    names = [e for e in os.listdir(folder) if e.startswith("checkpoint-") and e[11:].isdigit()]
    return [os.path.join(folder, e) for e in sorted(names, key=lambda e: int(e[11:]), reverse=True)]


def latest_complete_checkpoint(folder: str) -> str | None:
    return next((path for path in checkpoints_in(folder) if not _missing(path)), None)


def checkpoint_run(path: str) -> dict:
    """What RUN_INFO in a checkpoint says wrote it; empty when it says nothing."""
    return _read_json(os.path.join(path, RUN_INFO)) or {}


def _missing(path: str) -> str | None:
    if not os.path.isfile(os.path.join(path, STATE_FILE)):
        return STATE_FILE
    if not any(os.path.isfile(os.path.join(path, name)) for name in OPTIMIZER_FILES):
        return "the optimizer state (optimizer.pt)"
    if not any(os.path.isfile(os.path.join(path, name)) for name in WEIGHT_FILES):
        return "the weights (model.safetensors)"
    return None


def _check_run(path: str, run: dict) -> None:
    written_by = checkpoint_run(path)
    # Only what the checkpoint records is compared: one written before a setting was recorded still resumes.
    if any(run.get(key) != value for key, value in written_by.items()):
        raise InputError(
            f"--resume_from_checkpoint {path} was written by {_describe(written_by)}, not by {_describe(run)}"
        )


def _describe(run: dict) -> str:
    settings = ", ".join(f"--{key} {value}" for key, value in run.items() if key not in ("method", "phase"))
    return (
        run.get("method", "?")
        + (f" (phase {run['phase']})" if run.get("phase") else "")
        + (f" with {settings}" if settings else "")
    )


# ---- sequence length ---------------------------------------------------------------------------------------------


def max_length_for(max_seq_length: int, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> int:
    """The longest input the model takes: --max_seq_length, unless the tokenizer or the model's position table
    allows fewer (shared.positions)."""
    effective = min(max_seq_length, longest_input(tokenizer, config))
    if effective < max_seq_length:
        logger.warning(
            "--max_seq_length %d is more than the model takes; texts are cut to %d", max_seq_length, effective
        )
    return effective


# ---- guards ------------------------------------------------------------------------------------------------------


class TrainingGuard(TrainerCallback):
    """Stops training at the first non-finite gradient (a non-finite loss makes every gradient non-finite) that fp16's
    loss scaling does not explain, and at the end of the step during which SIGTERM or SIGINT arrived, saving a
    checkpoint when checkpoints are on. Each checkpoint records which run wrote it."""

    def __init__(self, run: dict):
        self.run = run
        self.signal_name: str | None = None
        self.stopping = False  # whether the processes agreed to stop at the end of the last step
        self.step = 0
        self.grad_norm = None
        self.accelerator = None

    def read_grad_norms_of(self, accelerator) -> None:
        """Check the gradient norm that `accelerator` computes for the Trainer at each step (to clip it, or only
        to log it) instead of computing it again: that second pass over every gradient was 2% of a MiniLM step
        on a CPU (benchmarks/findings.md)."""
        clip_grad_norm = accelerator.clip_grad_norm_

        def clip_and_keep_norm(*args, **kwargs):
            self.grad_norm = clip_grad_norm(*args, **kwargs)
            return self.grad_norm

        accelerator.clip_grad_norm_ = clip_and_keep_norm
        self.accelerator = accelerator

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # Checked before the optimizer applies the update, whatever logging_nan_inf_filter hides from the logs.
        norm, self.grad_norm = self.grad_norm, None
        if norm is None:  # no norm came through the accelerator this step (DeepSpeed's, or none watched): compute it
            # setfit's inner Trainer passes its SetFitModel as `model` and the torch body as `st_model`.
            model = kwargs.get("st_model") or kwargs["model"]
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else 0.0
        if not torch.isfinite(torch.as_tensor(norm)) and not self._loss_scale_overflowed():
            raise TrainingStopped(
                f"non-finite loss at step {state.global_step + 1}: the loss or its gradients became NaN or inf, so "
                "training stopped; nothing was saved as the final model or published. Lower --learning_rate, or "
                "train in fp32 if --fp16 was on"
            )

    def _loss_scale_overflowed(self) -> bool:
        """Under fp16 on a GPU, torch's GradScaler multiplies the loss by a scale (65,536 at first), skips a step whose
        scaled gradients overflow and halves the scale: a normal event early in a run, not divergence. Gradients
        that overflow at a scale of 1 or less are non-finite in themselves (a NaN loss halves it there in 16 steps)."""
        scaler = getattr(self.accelerator, "scaler", None)
        return scaler is not None and scaler.is_enabled() and scaler.get_scale() > 1

    def on_step_end(self, args, state, control, **kwargs):
        self.step = state.global_step
        self.stopping = self._told_to_stop()
        if self.stopping:
            _stop_here(args, control)
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        # A stop ends the epoch early; the Trainer would still evaluate (and save again) as at a full epoch's end.
        # The processes agree again here: a signal may reach one of them after the step's agreement, and one that
        # skipped the evaluation (a gather from every process) while the others ran it would wait with them for ever.
        # `stopping` is the same on every process, so they all take the same branch.
        if self.stopping:  # agreed at the step's end, whose checkpoint is saved
            control.should_evaluate = control.should_save = False
        elif self._told_to_stop():
            _stop_here(args, control)
        return control

    def on_save(self, args, state, control, **kwargs):
        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(path):
            with open(os.path.join(path, RUN_INFO), "w") as f:
                json.dump(self.run, f)

    def raise_if_stopped(self, output_dir: str) -> None:
        """After training: a run that a signal stopped ends here, telling how to go on."""
        if not self.signal_name:
            return
        saved = latest_complete_checkpoint(output_dir)
        how = (
            f"a checkpoint is in {saved}; {RESUME_HINT}"
            if saved
            else "no checkpoint was saved (--save_strategy steps or epoch turns checkpoints on)"
        )
        raise TrainingStopped(f"stopped by {self.signal_name} at step {self.step}; nothing was published: {how}")

    def _told_to_stop(self) -> bool:
        """Whether any process received a stop signal: all processes must stop at the same step, or the others
        would wait for ever in their next gradient exchange."""
        stop = _on_any_process(self.signal_name is not None)
        self.signal_name = self.signal_name or ("SIGTERM" if stop else None)
        return stop


class RoomCheck(TrainerCallback):
    """Refuses, before the first step, a run whose checkpoints and final model its disk has no room for
    (shared.disk). Added first among a Trainer's callbacks (`check_room_first`), so that the error comes before
    the progress bar starts."""

    def __init__(self, export_onnx: bool):
        self.export_onnx = export_onnx  # the final model gets an int8 ONNX file too

    def on_train_begin(self, args, state, control, **kwargs):
        # setfit passes its own arguments as `args`, and those of the inner Trainer, which checkpoints by them, as
        # `st_args`. The processes that write (args.should_save) check their disk; all of them stop together.
        args, model = kwargs.get("st_args") or args, kwargs.get("st_model") or kwargs["model"]
        existing = len(checkpoints_in(args.output_dir))
        tokenizer = kwargs.get("processing_class")
        short = shortfall(args, state, model, tokenizer, self.export_onnx, existing) if args.should_save else None
        if _on_any_process(short is not None):
            err = InputError(short or "another process's disk has too little free space for this run; see its error")
            err.same_on_every_process = short is None  # each process that is short says so, on any node
            raise err


def check_room_first(trainer: Trainer, export_onnx: bool = False) -> None:
    """Add a RoomCheck in front of `trainer`'s callbacks: CallbackHandler.add_callback appends."""
    trainer.callback_handler.callbacks.insert(0, RoomCheck(export_onnx))


def _on_any_process(flag: bool) -> bool:
    """Whether `flag` is true on any process of the launch (on the only one, when not launched as several)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    on_gpu = dist.get_backend() == "nccl"  # NCCL exchanges only GPU tensors
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    tensor = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def _stop_here(args, control) -> None:
    """End training now, saving a checkpoint when checkpoints are on, without the evaluation due here if any: a
    pass over the whole validation split would keep the user waiting after asking to stop."""
    control.should_training_stop, control.should_evaluate = True, False
    control.should_save = args.save_strategy != "no"  # transformers' SaveStrategy compares equal to strings


RESUME_HINT = "run the same command with --resume_from_checkpoint latest to go on"


def run_training(trainer: Trainer, run: dict, resume_from_checkpoint: str | None = None, export_onnx: bool = False):
    """trainer.train() under the guards (`guarded`). `export_onnx`: the final model will get an int8 ONNX file,
    which needs room too."""
    with guarded(trainer, run, export_onnx):
        return trainer.train(resume_from_checkpoint=resume_from_checkpoint)


@contextlib.contextmanager
def guarded(trainer: Trainer, run: dict, export_onnx: bool = False):
    """While `trainer` trains (transformers' Trainer, or the sentence-transformers Trainer inside setfit): the
    TrainingGuard, the room check, stop signals, freed memory kept, a full disk as one error; then a check that every
    weight is finite. Raises TrainingStopped when training did not finish."""
    guard = TrainingGuard(run)
    guard.read_grad_norms_of(trainer.accelerator)
    trainer.add_callback(guard)
    check_room_first(trainer, export_onnx)
    with stop_on_signals(guard), freed_memory_reused(), full_disk_is_one_error(trainer.args.output_dir):
        yield
    guard.raise_if_stopped(trainer.args.output_dir)
    check_finite(trainer.model)


def save_final_model(trainer: Trainer, folder: str) -> None:
    """The model, its config and tokenizer, as the final model of the run (every process takes part; the main one
    writes). Without training_args.bin: a pickle of the arguments, this machine's paths included, that loading the
    model never needs; the card and results.json record the settings."""
    trainer.save_model(folder)
    pickled_args = os.path.join(folder, "training_args.bin")
    if trainer.is_world_process_zero() and os.path.exists(pickled_args):
        os.remove(pickled_args)


class DiskFull(CliError, RuntimeError):
    """The disk filled up while the run was writing: nothing was published."""


@contextlib.contextmanager
def full_disk_is_one_error(output_dir: str):
    """While a run writes its checkpoints, final model and card: a full disk is one error that says which, whichever
    library met it (the check when training began leaves room, unless something else fills the disk meanwhile)."""
    try:
        yield
    except Exception as err:
        if isinstance(err, CliError) or not out_of_space(err, output_dir):
            raise
        folder = full_folder(err, output_dir)
        which = (
            f"the disk holding {folder} is full ({room_left(folder)})"
            if folder
            else "a disk the run writes to is full"
        )
        saved = latest_complete_checkpoint(output_dir)
        resume = f"; {saved} is complete: {RESUME_HINT} once there is room" if saved else ""
        raise DiskFull(
            f"{which}: {_first_line(err)}; nothing was published. Free some space or choose another --output_dir"
            f"{resume}"
        ) from err


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def check_finite(model: torch.nn.Module) -> None:
    """The last guard before a model is saved as final: every weight finite."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingStopped(
            f"the trained weights hold NaN or inf ({len(bad)} tensors, {bad[0]} first); nothing was saved or "
            "published. Lower --learning_rate"
        )


def check_finite_probabilities(probabilities) -> None:
    if not torch.isfinite(torch.as_tensor(probabilities)).all():
        raise TrainingStopped("the trained head gives non-finite probabilities; nothing was saved or published")


# How soon after the first a second SIGINT is the same Ctrl-C delivered again, not Ctrl-C pressed twice.
SAME_CTRL_C_S = 1.0


@contextlib.contextmanager
def stop_on_signals(guard: TrainingGuard):
    """While training, SIGTERM and SIGINT ask the guard to stop at the end of the step. A second SIGINT (Ctrl-C
    pressed again) stops at once, unless it comes within SAME_CTRL_C_S of the first: under torchrun a terminal's
    Ctrl-C reaches each process twice, from the terminal and passed on by the launcher, and every process exited at
    once, with no checkpoint and no error line. A second SIGTERM changes nothing: the kernel may repeat the
    parent-death signal while the launcher's threads exit one by one, and a scheduler follows its SIGTERM with
    SIGKILL anyway."""
    first_at = None

    def handler(signum, frame):
        nonlocal first_at
        if guard.signal_name:
            if signum == signal.SIGINT and time.monotonic() - first_at > SAME_CTRL_C_S:
                raise SystemExit(128 + signum)
            return
        guard.signal_name, first_at = signal.Signals(signum).name, time.monotonic()
        say(f"{guard.signal_name}: stopping at the end of this step")

    _die_with_launcher()
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# glibc's mallopt parameters, and the values its own dynamic thresholds grow to at most on 64-bit machines.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
GLIBC_MMAP_THRESHOLD_MAX, GLIBC_TRIM_THRESHOLD_MAX = 32 * 2**20, 64 * 2**20


@contextlib.contextmanager
def freed_memory_reused():
    """While training, glibc keeps freed blocks for the next step instead of handing them back to the system.

    By default glibc returns a freed block over 32 MiB to the system at once, so a tensor that large made at every
    step (the dense gradient of a 30,000-token embedding: 45 MiB for MiniLM) is page-faulted in afresh each time:
    about a tenth of a MiniLM step on a CPU (benchmarks/findings.md). Afterwards the kept blocks go back to the
    system and the thresholds to the values glibc's own dynamic ones grow to, so that a later run in the same
    process starts as a fresh one would.
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, 2**30)
    libc.mallopt(M_TRIM_THRESHOLD, 2**30)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD_MAX)
        libc.malloc_trim(0)


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:  # not glibc: macOS, musl
        return None


def _die_with_launcher() -> None:
    """On Linux, have the kernel send SIGTERM to this process when its parent (the launcher) dies, so that no
    training process outlives `accelerate launch` and none publishes after the user stopped the launch."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# ---- early stopping ----------------------------------------------------------------------------------------------


def early_stopping(training_args, metric: str) -> list[TrainerCallback]:
    """With --early_stopping_patience (checked when the flags were read, shared.args.check_early_stopping):
    transformers' EarlyStoppingCallback on `metric`, and the arguments that make the Trainer keep the best
    evaluation's weights: load_best_model_at_end, the metric and its direction, and a checkpoint at each evaluation
    when --save_strategy was left out. Set before the Trainer is built; returns the callbacks to add."""
    patience = training_args.early_stopping_patience
    if patience is None:
        return []
    training_args.metric_for_best_model = metric
    training_args.greater_is_better = not metric.endswith("loss")
    training_args.load_best_model_at_end = True
    if strategy_name(training_args.save_strategy) == "no":
        training_args.save_strategy = SaveStrategy(strategy_name(training_args.eval_strategy))
        training_args.save_steps = training_args.eval_steps or training_args.logging_steps
    # A resumed run goes on counting evaluations without improvement from where it stopped.
    training_args.restore_callback_states_from_checkpoint = True
    return [EarlyStoppingCallback(early_stopping_patience=patience)]


def early_stopping_summary(state: TrainerState, training_args) -> dict | None:
    """What results.json and the card record of early stopping: where training stopped and which step's weights
    the model holds."""
    if training_args.early_stopping_patience is None:
        return None
    return {
        "patience": training_args.early_stopping_patience,
        "metric": training_args.metric_for_best_model,
        "best_metric": state.best_metric,
        "best_step": state.best_global_step,
        "stopped_at_step": state.global_step,
        "max_steps": state.max_steps,
        "stopped_early": state.global_step < state.max_steps,
    }


# ---- logs --------------------------------------------------------------------------------------------------------


def keep_logs_in(output_dir: str) -> None:
    """Send the TensorBoard event files of the next trainer built to output_dir/runs.

    transformers 5 dropped TrainingArguments.logging_dir; its TensorBoard callback writes to output_dir/runs while
    training, but to ./runs (wherever the user happens to be) for an evaluation logged before training starts or
    after it ends. The callback reads this variable when it is created, so it is set before each trainer is built.
    """
    os.environ["TENSORBOARD_LOGGING_DIR"] = os.path.join(os.path.abspath(output_dir), "runs")
