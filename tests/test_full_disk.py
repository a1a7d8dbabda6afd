"""A disk without room for a run, tested on real small disks: each command runs in a mount namespace of its own in
which the output folder is a fresh tmpfs of a given size (or of a given number of files), so the library writing
the files meets a real ENOSPC. The run is refused before its first step when the room it needs is not there; a
disk that fills anyway is one error line, and nothing is published."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT, USER, accelerate_launcher, one_error_line, run_script

LEFT = "LEFT IN THE FOLDER:"
# An unprivileged user may mount in a user namespace of its own, where the kernel allows those.
UNSHARE = ["unshare", "--mount", *([] if os.geteuid() == 0 else ["--map-root-user"])]


@pytest.fixture(scope="module", autouse=True)
def _can_mount_small_disks(tmp_path_factory):
    """These tests need to mount a tmpfs in a mount namespace of their own: say so plainly where they cannot."""
    folder = str(tmp_path_factory.mktemp("probe"))
    probe = subprocess.run([*UNSHARE, "mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", folder], capture_output=True)
    assert probe.returncode == 0, (
        f"tests/test_full_disk.py mounts small disks with `{' '.join(UNSHARE)}`, which failed here "
        f"({probe.stderr.decode().strip()}): run the tests as root, or where user namespaces are allowed"
    )


def on_small_disk(folder: str, size: str, files: int | None = None) -> list[str]:
    """A command prefix: run the command with `folder` a fresh tmpfs of `size` (holding `files` files and folders at
    the most, itself included), then print what it left there after a line LEFT (the tmpfs goes with the command)."""
    options = f"size={size}" + (f",nr_inodes={files}" if files else "")
    script = (
        f'mkdir -p "$0" && mount -t tmpfs -o {options} tmpfs "$0" || exit 99; "$@"; rc=$?; '
        f'echo "{LEFT}"; cd "$0" && find . -mindepth 1 | sort; exit $rc'
    )
    return [*UNSHARE, "sh", "-c", script, folder]


def left_in(stdout: str) -> list[str]:
    return stdout.split(LEFT, 1)[1].split()


def train(script: str, model: str, reviews: dict, out, *flags: str, processes: int = 1) -> list[str]:
    return [
        *accelerate_launcher(processes), "-q", os.path.join(ROOT, "trainers", f"{script}.py"),
        "--model_name_or_path", model, "--train_file", reviews["train"], "--test_file", reviews["test"],
        "--text_column_name", "review", "--label_column_name", "sentiment", "--output_dir", str(out), *flags,
    ]  # fmt: skip


EVERY_STEP = ["--save_strategy", "steps", "--save_steps", "1", "--num_train_epochs", "3"]


@pytest.mark.parametrize("script, processes", [("full_finetune", 1), ("full_finetune", 2), ("setfit_fewshot", 1)])
def test_a_run_the_disk_has_no_room_for_is_refused_before_its_first_step(
    script, processes, tiny_bert, tiny_sentence_transformer, reviews, tmp_path
):
    """A checkpoint at every step of a run, none deleted: more than a 2 MB disk holds (for full_finetune 9 checkpoints
    of 311 KB). Before, the run trained until the disk was full and died in a traceback from safetensors or
    torch.save."""
    model = tiny_sentence_transformer if script == "setfit_fewshot" else tiny_bert
    out = tmp_path / "run"
    command = train(script, model, reviews, out, *EVERY_STEP, processes=processes)
    result = run_script([*on_small_disk(str(out), "2M"), *command], env={"ACCELERATE_USE_CPU": "true"}, timeout=120)

    assert result.returncode != 0, result.stderr[-3000:]  # `accelerate launch` exits 1 whatever the script's code
    error = one_error_line(result.stderr)
    assert f"error: the disk holding {out} has " in error and "free, but this run needs about" in error
    assert "checkpoints of" in error and "--save_total_limit" in error
    assert not [name for name in left_in(result.stdout) if "checkpoint-" in name]  # no step was trained


def test_the_same_run_fits_once_it_keeps_one_checkpoint(tiny_bert, reviews, tmp_path):
    """What the refusal advises works on the same disk: the estimate is not so large that it refuses every run."""
    out = tmp_path / "run"
    flags = [*EVERY_STEP, "--save_total_limit", "1"]
    result = run_script([*on_small_disk(str(out), "2M"), *train("full_finetune", tiny_bert, reviews, out, *flags)])

    assert result.returncode == 0, result.stderr[-3000:]
    left = left_in(result.stdout)
    checkpoints = [name for name in left if name.count("/") == 1 and "checkpoint-" in name]
    assert "./model.safetensors" in left and len(checkpoints) == 1, left


@pytest.mark.parametrize(
    "flags, resumable",
    [([], False), (["--save_strategy", "steps", "--save_steps", "2"], True)],
    ids=["at-the-final-save", "at-a-checkpoint"],
)
def test_a_disk_that_fills_while_writing_is_one_error_and_nothing_is_published(
    flags, resumable, hub, tiny_bert, reviews, tmp_path
):
    """The disk has room by size but takes only a few files: it fills as the final model (or a later checkpoint) is
    written, which no check before training foresees. Before, safetensors' or torch's error came as a traceback."""
    out = tmp_path / "run"
    files = 20 if resumable else 4  # one complete checkpoint and part of the next, or part of the final model
    publishing = ["--push_to_hub", "--hub_model_id", f"{USER}/full"]
    command = train("full_finetune", tiny_bert, reviews, out, *flags, *publishing)
    result = run_script([*on_small_disk(str(out), "64M", files=files), *command], env=hub.env)

    assert result.returncode != 0, result.stderr[-3000:]
    error = one_error_line(result.stderr)
    assert f"error: the disk holding {out} is full (" in error and "but no room for another file" in error
    assert "nothing was published" in error
    resume = f"{out}/checkpoint-2 is complete: run the same command with --resume_from_checkpoint latest"
    assert (resume in error) == resumable
    assert hub.state.repo(f"{USER}/full").commits == []


def test_a_short_write_of_torch_save_on_a_full_disk_is_told_as_a_full_disk(tmp_path):
    """torch.save says only "unexpected pos" when the disk fills in the middle of a file (the optimizer state of a
    checkpoint, after its weights fitted)."""
    out = tmp_path / "run"
    code = (
        "import sys, torch\n"
        "from shared.errors import exit_on_cli_error\n"
        "from shared.training import full_disk_is_one_error\n"
        "out = sys.argv[1]\n"
        "open(f'{out}/other', 'wb').write(b'x' * (8_000_000 - 200_000))\n"
        "with exit_on_cli_error(), full_disk_is_one_error(out):\n"
        "    torch.save({'exp_avg': torch.zeros(1_000_000)}, f'{out}/optimizer.pt')\n"
    )
    result = run_script([*on_small_disk(str(out), "8M"), sys.executable, "-c", code, str(out)])

    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.startswith(f"error: the disk holding {out} is full"), result.stderr[-3000:]
    assert "unexpected pos" in result.stderr


def test_a_full_disk_other_than_the_output_dirs_is_not_blamed_on_it(tmp_path):
    """A run writes elsewhere too (the fp32 ONNX export to a temporary folder, caches): the error named output_dir's
    disk, which may have gigabytes free."""
    out, elsewhere = tmp_path / "run", tmp_path / "scratch"
    out.mkdir()
    code = (
        "import sys\n"
        "from shared.errors import exit_on_cli_error\n"
        "from shared.training import full_disk_is_one_error\n"
        "with exit_on_cli_error(), full_disk_is_one_error(sys.argv[1]):\n"
        "    open(sys.argv[2] + '/model.onnx', 'wb').write(b'x' * 2_000_000)\n"
    )
    result = run_script([*on_small_disk(str(elsewhere), "1M"), sys.executable, "-c", code, str(out), str(elsewhere)])

    # The error names no file (a write, not an open, met ENOSPC), and output_dir's disk has room: no disk is named.
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.startswith("error: a disk the run writes to is full: [Errno 28]"), result.stderr[-3000:]
