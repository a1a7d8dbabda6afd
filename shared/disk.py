"""The disk space a run needs where it writes, and how a disk that is full anyway is told apart from other failures.

A run that finds the disk full at its final save has trained for nothing: safetensors writes through a temporary
file and a rename, so the folder is left with config.json alone. shared.training's guard therefore asks `shortfall`,
when training starts, whether the disk holding output_dir has room for the checkpoints still to come and the final
model, and refuses to start when it has not. That is the first moment the Trainer knows the run's steps, its optimizer
and, when resuming, where it goes on from.
"""

import errno
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass

import torch

from shared.args import strategy_name

# Beside its weights and tokenizer, each saved copy of a model holds its config, and a checkpoint its RNG, scheduler
# and trainer state (40 KB on disk, each file in whole 4 KB blocks, with one RNG file of 14 KB per process), a final
# model its card and results.json.
STATE_FILES = 128 * 1024
# A tokenizer without a tokenizer.json to measure saves a vocabulary file: about 20 bytes a token for XLM-R's
# sentencepiece model, 8 for bert-base-cased's vocab.txt.
BYTES_PER_TOKEN = 64
# AdamW, the Trainer's default, keeps two numbers per trained weight.
OPTIMIZER_STATES_PER_WEIGHT = 2
# --export_onnx's int8 file against the safetensors weights: 0.37 for MiniLM (33.7 MB against 90.9 MB).
INT8_FRACTION = 0.5
# How out-of-space errors read when a library does not raise them as an OSError: safetensors (Rust's io::Error), and
# torch.save when it cannot open the file.
FULL_DISK_TEXTS = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")


@dataclass
class SpaceNeeded:
    checkpoints: int  # checkpoints still to be written that are on disk at once, at the most
    checkpoint_bytes: int
    final_bytes: int  # the final model, and its int8 ONNX file when asked for

    @property
    def total(self) -> int:
        return self.checkpoints * self.checkpoint_bytes + self.final_bytes


def shortfall(
    args, state, model: torch.nn.Module, tokenizer, export_onnx: bool, existing_checkpoints: int
) -> str | None:
    """What is short, as one line for the user, when the disk holding args.output_dir has less free space than the
    run still needs (`space_needed`); None when it has enough."""
    needed = space_needed(args, state, model, tokenizer, export_onnx, existing_checkpoints)
    free = free_bytes(args.output_dir)
    if free >= needed.total:
        return None
    parts = [f"the final model ({size(needed.final_bytes)})"]
    if needed.checkpoints:
        parts.insert(0, f"{needed.checkpoints} checkpoints of {size(needed.checkpoint_bytes)} (weights and optimizer)")
    advice = (
        "keep fewer with --save_total_limit, or save less often (--save_steps, --save_strategy)"
        if needed.checkpoints > 1
        else "free some space"
    )
    return (
        f"the disk holding {args.output_dir} has {size(free)} free, but this run needs about "
        f"{size(needed.total)}: {' and '.join(parts)}; {advice}, or choose another --output_dir"
    )


def space_needed(
    args, state, model: torch.nn.Module, tokenizer, export_onnx: bool, existing_checkpoints: int
) -> SpaceNeeded:
    """The bytes the rest of a run writes, from the Trainer's own arguments and state when training begins, and the
    number of checkpoints already in output_dir."""
    weights = weights_bytes(model)
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    copy = weights + tokenizer_bytes(tokenizer) + STATE_FILES  # what every saved copy of the model holds
    final = copy
    if export_onnx:
        final += int(INT8_FRACTION * weights)
        if same_disk(tempfile.gettempdir(), args.output_dir):  # the fp32 export, quantized from a temporary folder
            final += weights
    return SpaceNeeded(
        checkpoints=checkpoints_on_disk_at_once(args, state, existing_checkpoints),
        checkpoint_bytes=copy + OPTIMIZER_STATES_PER_WEIGHT * trained,
        final_bytes=final,
    )


def checkpoints_on_disk_at_once(args, state, existing: int) -> int:
    """The most checkpoints of those still to come that are on disk at the same time. With --save_total_limit the
    Trainer deletes the oldest after writing a new one, so one more than the limit exists for a moment; checkpoints
    already in output_dir take that room first. A Trainer that tracks a best checkpoint (metric_for_best_model:
    early stopping, SetFit's body) never deletes it, and keeps it and the latest at a limit of 1."""
    to_come = checkpoints_to_come(args, state)
    if not args.save_total_limit:
        return to_come
    limit = max(args.save_total_limit, 2) if args.metric_for_best_model else args.save_total_limit
    return min(to_come, max(existing, limit) + 1 - existing)


def checkpoints_to_come(args, state) -> int:
    """How many checkpoints the Trainer writes from state.global_step to state.max_steps: at each multiple of
    save_steps and at the last step (steps), at each epoch's end (epoch), at each evaluation at the most (best)."""
    strategy = strategy_name(args.save_strategy)
    if strategy == "no":
        return 0
    if strategy == "epoch" or (strategy == "best" and strategy_name(args.eval_strategy) == "epoch"):
        return state.num_train_epochs - int(state.epoch or 0)
    every = int(state.save_steps if strategy == "steps" else state.eval_steps)  # the flag is a float
    if not every:
        return 0
    return state.max_steps // every - state.global_step // every + int(state.max_steps % every > 0)


def weights_bytes(model: torch.nn.Module) -> int:
    """The size of a model's safetensors weights: each tensor of its state once (tied weights are saved once)."""
    tensors = {t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}
    return sum(tensors.values())


def tokenizer_bytes(tokenizer) -> int:
    """The size of a tokenizer's files once saved, found without writing them: its tokenizer.json serialized in
    memory, or for a tokenizer without one, its vocabulary's size."""
    if tokenizer is None:
        return 0
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return len(backend.to_str().encode())
    return BYTES_PER_TOKEN * len(tokenizer)


def free_bytes(folder: str) -> int:
    """Free space on the disk that holds `folder`, or would hold it once made."""
    return shutil.disk_usage(_nearest_existing(folder)).free


def room_left(folder: str) -> str:
    """What the disk holding `folder` has left, as the error says it: bytes, and whether another file fits (a disk
    can run out of the entries that files take before it runs out of bytes)."""
    return f"{size(free_bytes(folder))} free" + (
        ", but no room for another file" if _no_room_for_files(folder) else ""
    )


def same_disk(a: str, b: str) -> bool:
    return os.stat(_nearest_existing(a)).st_dev == os.stat(_nearest_existing(b)).st_dev


def full_folder(err: BaseException, output_dir: str) -> str | None:
    """The folder whose disk `err` (out of space, `out_of_space`) filled: that of the file it names when it names one
    outside output_dir (a temporary folder, a cache); otherwise output_dir, if its disk is the one that is full.
    None when neither is known."""
    named = _named_path(err)
    if named is not None and not os.path.abspath(named).startswith(os.path.abspath(output_dir) + os.sep):
        return os.path.dirname(os.path.abspath(named))
    return output_dir if named is not None or _nearly_full(output_dir) else None


def _named_path(err: BaseException) -> str | None:
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.filename:
            return os.fsdecode(seen.filename)
        found = re.search(r'at path "([^"]+)"', str(seen))  # safetensors' own error
        if found:
            return found.group(1)
        seen = seen.__cause__ or seen.__context__
    return None


def _nearly_full(folder: str) -> bool:
    return free_bytes(folder) < STATE_FILES or _no_room_for_files(folder)


def _no_room_for_files(folder: str) -> bool:
    """Whether the disk holding `folder` has run out of the entries that files take (a filesystem without a fixed
    number of them reports none at all)."""
    stats = os.statvfs(_nearest_existing(folder))
    return stats.f_files > 0 and stats.f_favail == 0


def out_of_space(err: BaseException, folder: str) -> bool:
    """Whether `err`, raised while writing into `folder`, means that its disk is full: an OSError of ENOSPC or EDQUOT
    anywhere in its chain, a library's error that says so, or torch.save's short write ("unexpected pos") with the
    disk left with less room than a checkpoint's small files."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(seen) for text in FULL_DISK_TEXTS):
            return True
        seen = seen.__cause__ or seen.__context__
    return "unexpected pos" in str(err) and _nearly_full(folder)


def size(n: float) -> str:
    """Bytes as people read them: 950 bytes, 12.3 MB, 4.5 GB."""
    if n < 1000:
        return f"{n:.0f} bytes"
    power = min(3, int(math.log(n, 1000)))
    return f"{n / 1000**power:.1f} {('KB', 'MB', 'GB')[power - 1]}"


def _nearest_existing(folder: str) -> str:
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path
