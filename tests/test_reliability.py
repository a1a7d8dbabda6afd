"""A training job you can trust, tested by causing each fault: resume from a checkpoint ends where an uninterrupted
run ends, a stopped launch leaves no process and publishes nothing, a diverging run saves and publishes nothing,
a reused folder is refused, an over-long --max_seq_length is cut to what the model takes."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import psutil
import pytest
import torch
from accelerate import Accelerator
from huggingface_hub import HfApi
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertForMaskedLM,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from conftest import (
    ORG,
    ROOT,
    TOKEN,
    USER,
    accelerate_launcher,
    load_trainer,
    model_args_for,
    one_error_line,
    run_script,
    stop_launch,
)
from shared.classification import classifier_trainer, load_classifier, tokenize_splits
from shared.data import label_names, load_labeled_data
from shared.errors import InputError
from shared.training import TrainingGuard, TrainingStopped, run_training
from tiny import build_tiny_encoder

full_finetune = load_trainer("full_finetune")
freeze_layers = load_trainer("freeze_layers")
mlm_then_classify = load_trainer("mlm_then_classify")
setfit_fewshot = load_trainer("setfit_fewshot")


def weights_hash(folder) -> str:
    return hashlib.sha256(open(os.path.join(folder, "model.safetensors"), "rb").read()).hexdigest()


@pytest.fixture
def checkpointed(training_args):
    """Six steps with a checkpoint every three: one to resume from, halfway."""
    return replace(training_args, max_steps=6, save_strategy="steps", save_steps=3)


def run_method(method: str, model: str, data_args, training_args) -> dict:
    own = {"freeze_layers": [freeze_layers.FreezeArguments(num_frozen_layers=1)],
           "mlm_then_classify": [mlm_then_classify.MLMArguments()]}  # fmt: skip
    return load_trainer(method).main(model_args_for(model), data_args, *own.get(method, []), training_args)


# ---- resume ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["full_finetune", "freeze_layers"])
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(
    method, tiny_bert, data_args, checkpointed, tmp_path
):
    whole = run_method(method, tiny_bert, data_args, checkpointed)
    assert os.path.isfile(os.path.join(checkpointed.output_dir, "checkpoint-3", "run_info.json"))

    # The run stopped after step 3: its folder holds the first checkpoint and a later, incomplete one.
    stopped = tmp_path / "stopped"
    shutil.copytree(os.path.join(checkpointed.output_dir, "checkpoint-3"), stopped / "checkpoint-3")
    shutil.copytree(os.path.join(checkpointed.output_dir, "checkpoint-6"), stopped / "checkpoint-5")
    os.remove(stopped / "checkpoint-5" / "trainer_state.json")  # killed while saving
    resumed_args = replace(checkpointed, output_dir=str(stopped), resume_from_checkpoint="latest")
    resumed = run_method(method, tiny_bert, data_args, resumed_args)

    assert weights_hash(stopped) == weights_hash(checkpointed.output_dir)
    assert resumed["metrics"] == whole["metrics"]


def test_mlm_then_classify_resumes_either_phase_bit_identical(tiny_bert, data_args, checkpointed, tmp_path):
    whole_dir = checkpointed.output_dir
    whole = run_method("mlm_then_classify", tiny_bert, data_args, checkpointed)
    assert json.load(open(os.path.join(whole_dir, "mlm", "checkpoint-3", "run_info.json")))["phase"] == "mlm"
    assert json.load(open(os.path.join(whole_dir, "checkpoint-3", "run_info.json")))["phase"] == "classify"

    # Stopped in phase 1: resume from its checkpoint by path; phase 2 then runs afresh.
    in_phase_1 = replace(checkpointed, output_dir=str(tmp_path / "p1"),
                         resume_from_checkpoint=os.path.join(whole_dir, "mlm", "checkpoint-3"))  # fmt: skip
    from_phase_1 = run_method("mlm_then_classify", tiny_bert, data_args, in_phase_1)
    assert weights_hash(tmp_path / "p1" / "mlm") == weights_hash(os.path.join(whole_dir, "mlm"))
    assert weights_hash(tmp_path / "p1") == weights_hash(whole_dir)
    assert from_phase_1["metrics"] == whole["metrics"]

    # Stopped in phase 2: phase 1 had finished; `latest` finds the classifier's checkpoint and skips phase 1.
    stopped = tmp_path / "p2"
    shutil.copytree(os.path.join(whole_dir, "mlm"), stopped / "mlm")
    shutil.copytree(os.path.join(whole_dir, "checkpoint-3"), stopped / "checkpoint-3")
    in_phase_2 = replace(checkpointed, output_dir=str(stopped), resume_from_checkpoint="latest")
    from_phase_2 = run_method("mlm_then_classify", tiny_bert, data_args, in_phase_2)
    assert weights_hash(stopped) == weights_hash(whole_dir)
    assert from_phase_2["metrics"] == whole["metrics"]
    assert from_phase_2["method_details"]["perplexity_after"] == whole["method_details"]["perplexity_after"]


def test_setfit_resumes_its_body_bit_identical(tiny_sentence_transformer, data_args, training_args, tmp_path):
    """setfit's own Trainer cannot resume, and --resume_from_checkpoint was refused: a stopped SetFit run started
    over. Resumed through its inner Trainer from the first checkpoint, the body ends as an uninterrupted run's."""
    model, setfit_args = model_args_for(tiny_sentence_transformer), setfit_fewshot.SetFitArguments(num_iterations=4)
    training = setfit_fewshot.SetFitTrainingArguments(output_dir=str(tmp_path / "whole"), max_steps=6,
                                                      save_strategy="steps", save_steps=3)  # fmt: skip
    whole = setfit_fewshot.main(model, data_args, setfit_args, training)

    stopped = tmp_path / "stopped"
    shutil.copytree(tmp_path / "whole" / "checkpoint-3", stopped / "checkpoint-3")
    resumed_args = replace(training, output_dir=str(stopped), resume_from_checkpoint="latest")
    resumed = setfit_fewshot.main(model, data_args, setfit_args, resumed_args)

    state = json.load(open(stopped / "checkpoint-6" / "trainer_state.json"))
    # The batch size the body trained with, not the inner Trainer's default, which made every resume warn.
    assert state["global_step"] == 6 and state["train_batch_size"] == training.per_device_train_batch_size
    assert weights_hash(stopped) == weights_hash(tmp_path / "whole")
    assert resumed["metrics"] == whole["metrics"]
    # It went on from step 3: a run started over from the same seed would end as the whole one does, too.
    pairs = resumed["method_details"]["pairs_seen"], whole["method_details"]["pairs_seen"]
    assert pairs[0] == pytest.approx(pairs[1] / 2, rel=0.1), pairs
    another_method = replace(training_args, resume_from_checkpoint=str(stopped / "checkpoint-3"))
    with pytest.raises(InputError, match="was written by setfit_fewshot, not by full_finetune"):
        run_method("full_finetune", tiny_sentence_transformer, data_args, another_method)


def test_a_checkpoint_that_cannot_be_resumed_is_one_clear_error(tiny_bert, data_args, checkpointed, tmp_path):
    run_method("full_finetune", tiny_bert, data_args, checkpointed)
    checkpoint = os.path.join(checkpointed.output_dir, "checkpoint-3")
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    os.remove(broken / "optimizer.pt")
    cases = {
        str(tmp_path / "nowhere"): "does not exist",
        str(broken): re.escape("is not a complete checkpoint: the optimizer state (optimizer.pt) missing"),
        "latest": "no complete checkpoint in",
    }
    for wanted, message in cases.items():
        args = replace(checkpointed, output_dir=str(tmp_path / "new"), resume_from_checkpoint=wanted)
        with pytest.raises(InputError, match=message):
            run_method("full_finetune", tiny_bert, data_args, args)  # a folder: nothing loads before this fails

    another_method = replace(checkpointed, output_dir=str(tmp_path / "x"), resume_from_checkpoint=checkpoint)
    with pytest.raises(InputError, match="was written by full_finetune, not by freeze_layers"):
        run_method("freeze_layers", tiny_bert, data_args, another_method)


def test_a_checkpoint_of_other_labels_or_of_another_model_is_one_clear_error(
    tiny_encoders, reviews, data_args, checkpointed, tmp_path
):
    """Resumed with other data, a run went on with each label's weights read as another's; from another model, it
    failed deep inside torch once that model was loaded."""
    run_method("full_finetune", tiny_encoders["bert"], data_args, checkpointed)
    args = replace(checkpointed, output_dir=str(tmp_path / "new"),
                   resume_from_checkpoint=os.path.join(checkpointed.output_dir, "checkpoint-3"))  # fmt: skip
    renamed = {}
    for split in ("train", "validation", "test"):
        text = open(reviews[split]).read().replace(",negative", ",bad").replace(",positive", ",good")
        renamed[split] = tmp_path / f"{split}.csv"
        renamed[split].write_text(text)
    other_labels = replace(data_args, train_file=str(renamed["train"]), validation_file=str(renamed["validation"]),
                           test_file=str(renamed["test"]))  # fmt: skip

    with pytest.raises(InputError, match=re.escape("was trained for ['negative', 'positive'] (one label per text), "
                                                   "but this run's data has ['bad', 'good']")):  # fmt: skip
        run_method("full_finetune", tiny_encoders["bert"], other_labels, args)
    # The same names as sets of labels: a sigmoid per label would go on from a softmax's weights.
    with pytest.raises(InputError, match=re.escape("(one label per text), but this run's data has ['negative', "
                                                   "'positive'] (sets of labels)")):  # fmt: skip
        run_method("full_finetune", tiny_encoders["bert"], replace(data_args, label_delimiter=";"), args)
    with pytest.raises(InputError, match=r"holds another model \(a bert\) than .*roberta: no weight in common"):
        run_method("full_finetune", tiny_encoders["roberta"], data_args, args)
    # The same architecture with a longer position table: the names match, one shape does not.
    longer = tmp_path / "longer-bert"
    config = AutoConfig.from_pretrained(tiny_encoders["bert"])
    config.max_position_embeddings = 128
    BertForMaskedLM(config).save_pretrained(longer)
    AutoTokenizer.from_pretrained(tiny_encoders["bert"]).save_pretrained(longer)
    with pytest.raises(InputError, match=re.escape("its bert.embeddings.position_embeddings.weight is [64, 32], not "
                                                   "[128, 32]")):  # fmt: skip
        run_method("full_finetune", str(longer), data_args, args)
    assert not os.path.exists(os.path.join(args.output_dir, "model.safetensors"))


def test_a_checkpoint_that_froze_other_layers_is_one_clear_error(tiny_bert, data_args, checkpointed, tmp_path):
    """Its optimizer state holds other weights: the Trainer failed deep inside torch's optimizer."""
    run_method("freeze_layers", tiny_bert, data_args, checkpointed)  # num_frozen_layers 1
    checkpoint = os.path.join(checkpointed.output_dir, "checkpoint-3")
    args = replace(checkpointed, output_dir=str(tmp_path / "new"), resume_from_checkpoint=checkpoint)
    with pytest.raises(InputError, match="was written by freeze_layers with --num_frozen_layers 1, not by "
                                         "freeze_layers with --num_frozen_layers 0"):  # fmt: skip
        load_trainer("freeze_layers").main(model_args_for(tiny_bert), data_args,
                                           freeze_layers.FreezeArguments(num_frozen_layers=0), args)  # fmt: skip

    # A checkpoint from before the setting was recorded resumes as before.
    with open(os.path.join(checkpoint, "run_info.json"), "w") as f:
        json.dump({"method": "freeze_layers"}, f)
    assert run_method("freeze_layers", tiny_bert, data_args, args)["method_details"]["num_frozen_layers"] == 1


def test_a_masked_lm_checkpoint_of_another_model_is_one_clear_error(tiny_encoders, data_args, checkpointed, tmp_path):
    run_method("mlm_then_classify", tiny_encoders["bert"], data_args, checkpointed)
    phase_1 = os.path.join(checkpointed.output_dir, "mlm", "checkpoint-3")
    args = replace(checkpointed, output_dir=str(tmp_path / "new"), resume_from_checkpoint=phase_1)
    with pytest.raises(InputError, match=r"holds another model \(a bert\) than .*distilbert: no weight in common"):
        run_method("mlm_then_classify", tiny_encoders["distilbert"], data_args, args)


# ---- preemption --------------------------------------------------------------------------------------------------


def launch_in_background(out: str, env: dict, processes: int = 1, *flags: str) -> subprocess.Popen:
    """full_finetune under accelerate launch, for far more steps than the test waits for, a checkpoint every 2."""
    return run_script(
        [*accelerate_launcher(processes), os.path.join(ROOT, "trainers/full_finetune.py"), *flags, "--output_dir", out,
         "--max_steps", "100000", "--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1000"],
        env={**env, "ACCELERATE_USE_CPU": "true"},
        background=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("processes", "signum", "target"),
    [
        (1, signal.SIGTERM, "launcher"),
        (2, signal.SIGTERM, "launcher"),
        (1, signal.SIGINT, "training process"),
        (2, signal.SIGINT, "terminal"),
    ],
)
def test_a_stopped_launch_checkpoints_publishes_nothing_and_leaves_no_process(
    processes, signum, target, hub, tiny_bert, reviews, tmp_path
):
    out = str(tmp_path / "run")
    repo_id = f"{ORG}/preempted"
    launcher = launch_in_background(
        out, hub.env, processes,
        "--model_name_or_path", tiny_bert, "--train_file", reviews["train"], "--test_file", reviews["test"],
        "--text_column_name", "review", "--label_column_name", "sentiment", "--push_to_hub", "--hub_model_id", repo_id,
    )  # fmt: skip
    stderr = stop_launch(launcher, "full_finetune", processes, os.path.join(out, "checkpoint-2"), signum, target)
    assert launcher.returncode != 0
    assert "stopped by SIG" in stderr and "--resume_from_checkpoint latest" in stderr, stderr[-3000:]
    assert stderr.count("error: stopped by SIG") == 1, stderr[-3000:]  # not one line for each process
    assert hub.state.repo(repo_id).commits == []
    assert not os.path.exists(os.path.join(out, "model.safetensors")), "a stopped run saved a final model"
    checkpoints = sorted((e for e in os.listdir(out) if e.startswith("checkpoint-")), key=lambda e: int(e[11:]))
    assert os.path.isfile(os.path.join(out, checkpoints[-1], "trainer_state.json"))  # the last one is complete


@pytest.mark.parametrize("processes", [1, 2])
def test_ctrl_c_outside_training_is_one_line_and_publishes_nothing(processes, hub, tiny_bert, reviews, tmp_path):
    """Ctrl-C while the run waits for the Hub's answer in the preflight; the same holds while it loads, evaluates,
    saves or publishes. Training itself stops at a step's end (above). Before, a traceback from inside httpx; and
    under torchrun, which passes the signal on once more, tracebacks from the exit's cleanup."""
    hub.state.stall("GET", r"/api/whoami-v2", seconds=30, times=processes)
    launcher = run_script(
        [*accelerate_launcher(processes), "-q", os.path.join(ROOT, "trainers/full_finetune.py"),
         "--model_name_or_path", tiny_bert, "--train_file", reviews["train"], "--test_file", reviews["test"],
         "--text_column_name", "review", "--label_column_name", "sentiment", "--output_dir", str(tmp_path / "run"),
         "--push_to_hub"],
        env={**hub.env, "ACCELERATE_USE_CPU": "true"}, background=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while hub.state.requests.count(("GET", "/api/whoami-v2")) < processes:
            assert time.monotonic() < deadline and launcher.poll() is None, launcher.communicate()[1][-3000:]
            time.sleep(0.1)
        for process in [psutil.Process(launcher.pid), *psutil.Process(launcher.pid).children(recursive=True)]:
            process.send_signal(signal.SIGINT)  # as a terminal sends Ctrl-C to the whole foreground job
        _, stderr = launcher.communicate(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert one_error_line(stderr) == "error: stopped by Ctrl-C (SIGINT) before the run finished"
    assert "Exception ignored" not in stderr, stderr[-3000:]
    assert not any(repo.commits for repo in hub.state.repos.values())


@pytest.mark.parametrize("evaluations", [{"eval_strategy": "epoch"}, {"eval_strategy": "steps", "eval_steps": 2}])
def test_a_stop_mid_epoch_does_not_wait_for_the_epochs_evaluation(evaluations, tiny_bert, data_args, training_args):
    """Ctrl-C during an epoch stops the run at the end of that step: without the pass over the validation split
    that the end of a full epoch, or a step that evaluates, brings (on a large split, minutes after the user asked
    to stop)."""

    class CtrlCAtStep2(TrainerCallback):
        evaluations = 0

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)

        def on_evaluate(self, args, state, control, **kwargs):
            self.evaluations += 1

    args = replace(training_args, **evaluations, max_steps=-1, num_train_epochs=2)  # 6 steps an epoch
    splits = load_labeled_data(data_args, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = load_classifier(tiny_bert, None, label_names(splits))
    callback = CtrlCAtStep2()
    trainer = classifier_trainer(model, tokenizer, tokenize_splits(splits, tokenizer, 32), args, callbacks=[callback])
    with pytest.raises(TrainingStopped, match="stopped by SIGINT at step 2"):
        run_training(trainer, {"method": "full_finetune"})
    assert callback.evaluations == 0 and trainer.state.global_step == 2


# A run of two processes in which only the second gets SIGTERM, at the end of the first epoch: after the step's
# check that both processes stop together, before the epoch's evaluation (a gather from both processes).
STOPPED_AT_AN_EPOCHS_END = """
import os, signal, sys
sys.path.insert(0, {root!r})
import torch.distributed
from transformers import AutoTokenizer, TrainerCallback
from shared.args import DataArguments, RecipeTrainingArguments
from shared.classification import classifier_trainer, load_classifier, tokenize_splits
from shared.data import label_names, load_labeled_data
from shared.training import TrainingStopped, run_training

model, train, validation, out = sys.argv[1:]

class SigtermTheSecondProcessAtTheFirstEpochsEnd(TrainerCallback):
    evaluations = 0

    def on_epoch_end(self, args, state, control, **kwargs):
        if args.process_index == 1 and round(state.epoch) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_evaluate(self, args, state, control, **kwargs):
        self.evaluations += 1

data = DataArguments(train_file=train, validation_file=validation, text_column_name="review",
                     label_column_name="sentiment", max_seq_length=32)
args = RecipeTrainingArguments(output_dir=out, num_train_epochs=3, per_device_train_batch_size=8, report_to="none",
                               eval_strategy="epoch", save_strategy="steps", save_steps=1000, disable_tqdm=True)
splits = load_labeled_data(data, args.seed)
tokenizer = AutoTokenizer.from_pretrained(model)
callback = SigtermTheSecondProcessAtTheFirstEpochsEnd()
trainer = classifier_trainer(load_classifier(model, None, label_names(splits)), tokenizer,
                             tokenize_splits(splits, tokenizer, 32), args, callbacks=[callback])
try:
    run_training(trainer, {{"method": "full_finetune"}})
except TrainingStopped as stopped:
    print(f"process {{args.process_index}}: {{stopped}}; evaluations: {{callback.evaluations}}", flush=True)
    # Both report before either exits: the launcher kills the other process once one exits non-zero.
    torch.distributed.barrier()
    sys.exit(2)
"""


def test_a_stop_that_reaches_one_process_at_an_epochs_end_stops_both_without_evaluating(tiny_bert, reviews, tmp_path):
    """The processes agree at the epoch's end too: one that skipped the evaluation for its signal while the other
    evaluated waited with it for ever (until the launcher killed both, unsaved)."""
    script = tmp_path / "stopped_at_an_epochs_end.py"
    script.write_text(STOPPED_AT_AN_EPOCHS_END.format(root=ROOT))
    out = tmp_path / "run"
    launch = run_script(
        [*accelerate_launcher(2), str(script), tiny_bert, reviews["train"], reviews["validation"], str(out)],
        env={"ACCELERATE_USE_CPU": "true"},
        background=True,
    )
    try:
        stdout, stderr = launch.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the two processes still ran 120 s after the stop: each waits for the other")
    finally:
        for process in [*psutil.Process(launch.pid).children(recursive=True), launch] if launch.poll() is None else []:
            process.kill()
    # Found anywhere: the processes share the launcher's stdout unbuffered (PYTHONUNBUFFERED), where print writes a
    # line and its newline apart, so one process's line may follow the other's before its newline.
    reports = sorted(re.findall(r"process \d: .*?evaluations: \d+", stdout))
    assert len(reports) == 2, f"stdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
    step = first_epochs_last_step(out)
    for process, report in enumerate(reports):
        assert report.startswith(f"process {process}: stopped by SIGTERM at step {step};"), report
        assert report.endswith("evaluations: 0"), report
    assert os.path.isfile(out / f"checkpoint-{step}" / "trainer_state.json")


def first_epochs_last_step(out) -> int:
    """The step at which the first epoch ended, from the one checkpoint the stopped run saved."""
    (checkpoint,) = [e for e in os.listdir(out) if e.startswith("checkpoint-")]
    state = json.load(open(os.path.join(out, checkpoint, "trainer_state.json")))
    assert state["epoch"] == 1.0, state["epoch"]
    return state["global_step"]


# ---- divergence --------------------------------------------------------------------------------------------------


def test_a_diverging_run_stops_and_publishes_nothing(hub, tiny_bert, reviews, tmp_path):
    out = tmp_path / "diverged"
    result = run_script(
        [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "-q", "--config_file",
         os.path.join(ROOT, "accelerate_config.yaml"), "trainers/full_finetune.py", "--model_name_or_path", tiny_bert,
         "--train_file", reviews["train"], "--test_file", reviews["test"], "--text_column_name", "review",
         "--label_column_name", "sentiment", "--learning_rate", "1e6", "--max_steps", "20", "--output_dir", str(out),
         "--push_to_hub", "--hub_model_id", f"{USER}/diverged"],
        env=hub.env,
    )  # fmt: skip
    assert result.returncode != 0
    assert "error: non-finite loss at step" in result.stderr and "Traceback" not in result.stderr
    assert hub.state.repo(f"{USER}/diverged").commits == []
    assert not (out / "model.safetensors").exists() and not (out / "results.json").exists()


def test_setfit_stops_on_a_diverging_body(tiny_sentence_transformer, data_args, tmp_path):
    training = setfit_fewshot.SetFitTrainingArguments(output_dir=str(tmp_path / "setfit"), learning_rate=1e6,
                                                      max_steps=20)  # fmt: skip
    with pytest.raises(TrainingStopped, match="non-finite loss at step"):
        setfit_fewshot.main(model_args_for(tiny_sentence_transformer), data_args,
                            setfit_fewshot.SetFitArguments(num_iterations=4), training)  # fmt: skip
    assert not (tmp_path / "setfit" / "model.safetensors").exists()


@pytest.mark.parametrize("scale", [2.0**16, 1.0, None], ids=["scale-65536", "scale-1", "no-scaler"])
def test_an_fp16_step_that_the_loss_scaler_skips_is_not_divergence(scale, tmp_path):
    """Under fp16 on a GPU, accelerate's GradScaler skips a step whose scaled gradients overflow and lowers its scale;
    the guard lets it (the first steps of many fp16 runs do this). Gradients that overflow at a scale of 1, or
    without loss scaling, stop the run. Here on the CPU: the accelerate and torch objects of such a run, with the
    overflowed gradients the scaler sees."""
    accelerator = Accelerator()
    if scale is not None:
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=scale)  # what accelerate makes for fp16 on a GPU
    guard = TrainingGuard({"method": "full_finetune"})
    guard.read_grad_norms_of(accelerator)
    model = torch.nn.Linear(4, 2)
    for weight in model.parameters():
        weight.grad = torch.ones_like(weight)
    model.weight.grad[0, 0] = float("inf")
    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # as the Trainer calls it before each optimizer step
    step = (TrainingArguments(str(tmp_path), report_to="none"), TrainerState(global_step=4), TrainerControl())
    if scale == 2.0**16:
        guard.on_pre_optimizer_step(*step, model=model)
    else:
        with pytest.raises(TrainingStopped, match="non-finite loss at step 5"):
            guard.on_pre_optimizer_step(*step, model=model)


# ---- output folders ----------------------------------------------------------------------------------------------


def test_a_folder_of_another_run_is_refused_then_cleared_on_request(tiny_bert, data_args, training_args):
    os.makedirs(training_args.output_dir)
    for stale in ("config_setfit.json", "model_head.pkl"):
        open(os.path.join(training_args.output_dir, stale), "w").write("{}")

    with pytest.raises(InputError, match=r"already holds files \(config_setfit.json, model_head.pkl\); pass "
                                         r"--overwrite_output_dir"):  # fmt: skip
        full_finetune.main(model_args_for(tiny_bert), data_args, training_args)

    training_args.overwrite_output_dir = True
    full_finetune.main(model_args_for(tiny_bert), data_args, training_args)
    files = set(os.listdir(training_args.output_dir))
    assert "model.safetensors" in files and not files & {"config_setfit.json", "model_head.pkl"}


@pytest.mark.parametrize(
    "script, mistake, error",
    [
        ("full_finetune", ["--label_column_name", "stars"], "train has no column 'stars'"),
        ("freeze_layers", ["--num_frozen_layers", "9"], "--num_frozen_layers 9 is out of range"),
        ("setfit_fewshot", ["--samples_per_label", "30"], "--samples_per_label 30 needs 30"),
        (
            "mlm_then_classify",
            ["--model_name_or_path", "/models/mistyped"],
            "'/models/mistyped': there is no such folder",
        ),
        ("full_finetune", ["--resume_from_checkpoint", "/runs/gone"], "--resume_from_checkpoint /runs/gone does not"),
        ("mlm_then_classify", ["--resume_from_checkpoint", "/runs/gone"], "--resume_from_checkpoint /runs/gone does"),
    ],
)
def test_a_wrong_request_clears_nothing_and_creates_no_hub_repo(
    script, mistake, error, hub, tiny_bert, tiny_sentence_transformer, reviews, tmp_path
):
    """--overwrite_output_dir cleared the folder first: a wrong column, then the previous run's model was gone. And
    the Hub preflight came first: it created the repo, which a wrong column left empty on the Hub."""
    previous = tmp_path / "run"
    previous.mkdir()
    (previous / "model.safetensors").write_text("the previous run's model")
    model = tiny_sentence_transformer if script == "setfit_fewshot" else tiny_bert
    result = run_script([
        sys.executable, f"trainers/{script}.py", "--model_name_or_path", model, "--train_file", reviews["train"],
        "--test_file", reviews["test"], "--text_column_name", "review", "--label_column_name", "sentiment", *mistake,
        "--output_dir", str(previous), "--overwrite_output_dir", "--push_to_hub", "--hub_model_id", f"{USER}/run",
    ], env=hub.env)  # fmt: skip

    assert result.returncode == 2 and error in result.stderr, result.stderr[-2000:]
    assert (previous / "model.safetensors").read_text() == "the previous run's model"
    assert hub.state.repos == {}


MISTYPED_ID = ["--model_name_or_path", f"{USER}/tiny-brt"]


@pytest.mark.parametrize(
    "script, mistake",
    [
        ("full_finetune", MISTYPED_ID),
        ("setfit_fewshot", MISTYPED_ID),
        ("mlm_then_classify", MISTYPED_ID),
        ("full_finetune", ["--model_revision", "v2"]),
    ],
)
def test_overwrite_clears_nothing_when_the_hub_has_no_such_model(script, mistake, hub, tiny_bert, reviews, tmp_path):
    """Only a path was checked before the folder was cleared: a mistyped repo id cost the previous run."""
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(f"{USER}/tiny-bert")
    api.upload_folder(repo_id=f"{USER}/tiny-bert", folder_path=tiny_bert)
    previous = tmp_path / "run"
    previous.mkdir()
    (previous / "model.safetensors").write_text("the previous run's model")
    result = run_script([
        sys.executable, f"trainers/{script}.py", "--model_name_or_path", f"{USER}/tiny-bert", *mistake,
        "--train_file", reviews["train"], "--test_file", reviews["test"], "--text_column_name", "review",
        "--label_column_name", "sentiment", "--output_dir", str(previous), "--overwrite_output_dir",
    ], env=hub.env)  # fmt: skip

    assert result.returncode == 2 and "error: could not load 'alice/tiny-" in result.stderr, result.stderr[-2000:]
    assert (previous / "model.safetensors").read_text() == "the previous run's model"


def test_an_output_dir_that_is_a_file_is_one_error_before_anything_loads(
    tiny_bert, data_args, training_args, tmp_path
):
    (tmp_path / "notes.txt").write_text("mine")
    args = replace(training_args, output_dir=str(tmp_path / "notes.txt"))
    with pytest.raises(InputError, match="notes.txt is a file; name a folder"):
        full_finetune.main(model_args_for(tiny_bert), data_args, args)


def test_overwrite_never_clears_a_project_folder(tiny_bert, data_args, training_args, tmp_path):
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "notes.txt").write_text("precious")
    args = replace(training_args, output_dir=str(project), overwrite_output_dir=True)
    with pytest.raises(InputError, match="will not clear"):
        full_finetune.main(model_args_for(tiny_bert), data_args, args)
    assert (project / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "method", ["full_finetune", "freeze_layers", "setfit_fewshot", "mlm_then_classify", "mlm_classify_alone"]
)
def test_no_file_of_the_output_names_a_path_of_the_training_machine(
    method, tiny_bert, tiny_sentence_transformer, data_args, training_args, tmp_path_factory
):
    if method == "setfit_fewshot":
        training = setfit_fewshot.SetFitTrainingArguments(output_dir=training_args.output_dir, max_steps=2)
        setfit_args = setfit_fewshot.SetFitArguments(num_iterations=2)
        setfit_fewshot.main(model_args_for(tiny_sentence_transformer), data_args, setfit_args, training)
    elif method == "mlm_classify_alone":  # from an encoder folder given on the command line
        alone = mlm_then_classify.MLMArguments(phase="classify")
        mlm_then_classify.main(model_args_for(tiny_bert), data_args, alone, training_args)
    else:
        run_method(method, tiny_bert, data_args, training_args)

    # The base models, the data files, the output folder and the caches all lie under the tests' temporary root.
    root = str(tmp_path_factory.getbasetemp())
    for folder, subfolders, files in os.walk(training_args.output_dir):
        subfolders[:] = [name for name in subfolders if not name.startswith("checkpoint-")]  # never published
        for name in files:
            path = os.path.join(folder, name)
            named = root.encode() in open(path, "rb").read()
            assert not named, f"{os.path.relpath(path, root)} names a path of this machine"


@pytest.mark.parametrize("method", ["full_finetune", "setfit_fewshot", "mlm_then_classify"])
def test_a_half_precision_checkpoint_is_trained_in_fp32(
    method, tiny_bert, tiny_sentence_transformer, data_args, training_args, tmp_path
):
    """Many Hub checkpoints store fp16 weights, and transformers 5 loads a checkpoint in its stored dtype: trained so,
    a CPU run crashed inside torch (mixed dtype) and a GPU run lost AdamW's small steps to fp16 rounding. The run
    trains, and the trained model's weights are fp32."""
    half = str(tmp_path / "half")
    if method == "setfit_fewshot":
        SentenceTransformer(tiny_sentence_transformer).half().save_pretrained(half)
    else:
        AutoModel.from_pretrained(tiny_bert).half().save_pretrained(half)
        AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(half)
    assert dtypes(os.path.join(half, "model.safetensors")) == {"torch.float16"}

    if method == "setfit_fewshot":
        training = setfit_fewshot.SetFitTrainingArguments(output_dir=training_args.output_dir, max_steps=2)
        setfit_args = setfit_fewshot.SetFitArguments(num_iterations=2)
        setfit_fewshot.main(model_args_for(half), data_args, setfit_args, training)
    else:
        run_method(method, half, data_args, training_args)
    assert dtypes(os.path.join(training_args.output_dir, "model.safetensors")) == {"torch.float32"}


def dtypes(weights_file: str) -> set[str]:
    return {str(weight.dtype) for weight in load_file(weights_file).values()}


# ---- sequence length ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "positions"), [("bert", 64), ("roberta", 64)])
def test_max_seq_length_is_cut_to_the_positions_the_model_has(family, positions, data_args, training_args, tmp_path):
    encoder = build_tiny_encoder(family, str(tmp_path / family))
    config_file = os.path.join(encoder, "tokenizer_config.json")
    config = json.load(open(config_file))
    json.dump({**config, "model_max_length": 10**30}, open(config_file, "w"))  # a tokenizer saved without a limit
    long_reviews = tmp_path / "long.csv"
    positive, negative = " ".join(["great fun film"] * 60), " ".join(["dull boring plot"] * 60)
    long_reviews.write_text("review,sentiment\n" + f"{positive},positive\n{negative},negative\n" * 12)
    data = replace(data_args, train_file=str(long_reviews), validation_file=None, test_file=None, max_seq_length=256)

    results = full_finetune.main(model_args_for(encoder), data, training_args)

    assert results["hyperparameters"]["max_seq_length"] == positions
    assert f"max_seq_length: {positions}" in open(os.path.join(training_args.output_dir, "README.md")).read()


def test_the_token_is_in_no_output_of_a_failed_run(hub, tiny_bert, reviews, tmp_path):
    """Publishing fails after training; neither the trainer nor accelerate's launcher (without -q, so that its own
    traceback prints) shows the token."""
    hub.state.add_fault("POST", r"/commit/", 403)
    result = run_script(
        [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--config_file",
         os.path.join(ROOT, "accelerate_config.yaml"), "trainers/full_finetune.py", "--model_name_or_path", tiny_bert,
         "--train_file", reviews["train"], "--test_file", reviews["test"], "--text_column_name", "review",
         "--label_column_name", "sentiment", "--max_steps", "2", "--output_dir", str(tmp_path / "out"),
         "--push_to_hub", "--hub_model_id", f"{USER}/refused"],
        env=hub.env,
    )  # fmt: skip
    assert result.returncode != 0 and "publish it later with `hf upload" in result.stderr
    assert "Traceback" in result.stderr  # the launcher's own, which echoes the command line
    assert TOKEN not in result.stdout + result.stderr
