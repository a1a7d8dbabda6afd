"""One vocabulary for the four trainers: the same flags, config files, defaults that a Python call shares with the
command line, and command-line mistakes reported in one line."""

import glob
import json
import os
import re
import sys

import pytest
import torch
import yaml

from conftest import ROOT, accelerate_launch, load_trainer, model_args_for, run_script
from shared.args import DataArguments, ModelArguments, RecipeTrainingArguments, parse_cli
from shared.errors import InputError

SCRIPTS = ["full_finetune", "freeze_layers", "setfit_fewshot", "mlm_then_classify"]
COMMON_FLAGS = ["--report_to", "none", "--per_device_train_batch_size", "8", "--num_train_epochs", "1", "--seed", "1",
                "--max_steps", "3", "--learning_rate", "1e-3"]  # fmt: skip


def data_flags(reviews) -> list[str]:
    return [
        "--train_file", reviews["train"], "--validation_file", reviews["validation"], "--test_file", reviews["test"],
        "--text_column_name", "review", "--label_column_name", "sentiment", "--max_seq_length", "32",
    ]  # fmt: skip


def readme_launcher() -> list[str]:
    """`accelerate launch` with the options the README's commands give it."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    match = re.search(r"accelerate launch (-q --config_file accelerate_config\.yaml) trainers/", readme)
    assert match, "the README launches the trainers with accelerate launch -q --config_file accelerate_config.yaml"
    return [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", *match[1].split()]


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_same_common_flags_run_every_method(script, tiny_bert, reviews, tmp_path):
    out = str(tmp_path / script)
    result = accelerate_launch(
        f"trainers/{script}.py", "--model_name_or_path", tiny_bert, *data_flags(reviews), *COMMON_FLAGS,
        "--output_dir", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["method"] == script and results["seed"] == 1
    assert results["hyperparameters"]["learning_rate"] == 1e-3
    assert results["hyperparameters"]["per_device_train_batch_size"] == 8


def test_a_config_file_runs_as_the_same_flags(tiny_bert, reviews, tmp_path):
    full_finetune = load_trainer("full_finetune")
    flags = ["--model_name_or_path", tiny_bert, *data_flags(reviews), *COMMON_FLAGS]
    config = {flag.removeprefix("--"): value for flag, value in zip(flags[::2], flags[1::2], strict=True)}
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({**config, "seed": 5, "output_dir": str(tmp_path / "from_file")}))
    dataclasses = [ModelArguments, DataArguments, RecipeTrainingArguments]

    # Flags after the file override it: the seed here, and the output folder.
    from_file = parse_cli(dataclasses, "", [str(config_file), "--seed", "1", "--output_dir", str(tmp_path / "a")])
    from_flags = parse_cli(dataclasses, "", [*flags, "--output_dir", str(tmp_path / "b")])

    first = full_finetune.main(*from_file)
    second = full_finetune.main(*from_flags)
    assert first["seed"] == second["seed"] == 1
    assert first["hyperparameters"] == second["hyperparameters"]
    assert first["metrics"] == second["metrics"]


def test_every_method_has_a_config_of_the_books_recipe():
    readme = open(os.path.join(ROOT, "README.md")).read()
    for script in SCRIPTS:
        config_file = os.path.join(ROOT, "configs", f"{script}.yaml")
        parsed = parse_cli(load_trainer(script).ARGUMENTS, "", [config_file])
        values = {key: value for args in parsed for key, value in vars(args).items()}
        for key, value in yaml.safe_load(open(config_file)).items():
            if key == "report_to":
                continue  # TrainingArguments turns "none" into []
            assert values[key] == value or str(values[key]) == str(value), (script, key)
        assert f"trainers/{script}.py configs/{script}.yaml" in readme


def test_a_misspelled_flag_under_accelerate_launch_is_one_line(tiny_bert, tmp_path):
    result = run_script([*readme_launcher(), "trainers/full_finetune.py", "--lerning_rate", "1e-3",
                         "--output_dir", str(tmp_path / "never")])  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip() == "error: --lerning_rate: no such flag; did you mean --learning_rate?"
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "never").exists()


def test_mistakes_are_reported_together_and_in_one_line_each(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("lerning_rate: 1.0e-3\nnum_train_epochs: 2\n")
    result = run_script([sys.executable, "trainers/freeze_layers.py", str(config), "--num_frozen_layer", "2"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{config}: lerning_rate: no such flag; did you mean learning_rate?" in result.stderr

    result = run_script([sys.executable, "trainers/full_finetune.py", "--num_frozen_layer", "2", "--hub_token",
                         "hf_SecretValue", "--learning_rate", "fast"])  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--num_frozen_layer: no such flag" in result.stderr
    assert "--hub_token: pass the token through HF_TOKEN" in result.stderr
    assert "hf_SecretValue" not in result.stderr


def test_an_invalid_repo_id_is_one_line_before_anything_loads(tmp_path):
    for script in SCRIPTS:
        flags = ["--hub_model_id", "alice/my model", "--model_name_or_path", "/nonexistent"]
        result = run_script([sys.executable, f"trainers/{script}.py", *flags, "--output_dir", str(tmp_path / script)])
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().startswith("error: --hub_model_id 'alice/my model' is not a valid repo id")
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="--fp16 is refused only where no GPU trains")
def test_fp16_on_a_cpu_is_one_line_before_anything_loads(tmp_path):
    """On a CPU --fp16 trained in fp32 (accelerate makes no fp16 autocast there) while results.json said fp16."""
    for script in SCRIPTS:
        flags = ["--fp16", "--model_name_or_path", "/nonexistent", "--output_dir", str(tmp_path / script)]
        result = run_script([sys.executable, f"trainers/{script}.py", *flags])
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().startswith("error: --fp16 needs a GPU: on a CPU the run would train in fp32")
        assert len(result.stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / script)


def test_a_trainers_log_shows_each_hub_warning_once():
    """huggingface_hub's warnings (a download retried after a lost connection, say) reached its own handler and the
    trainers' too: each was printed twice. The trainers' logging setup, in a fresh process as a launch runs it."""
    code = (
        "import logging; from shared.errors import configure_cli_logging; configure_cli_logging('full_finetune'); "
        "logging.getLogger('huggingface_hub.utils._http').warning('lost answer, retrying'); "
        "logging.getLogger('shared.data').info('tokenized')"
    )
    result = run_script([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("lost answer, retrying") == 1, result.stderr
    assert "INFO shared.data: tokenized" in result.stderr  # the project's progress still shows


def test_setfit_refuses_trainer_flags_it_has_no_use_for():
    result = run_script([sys.executable, "trainers/setfit_fewshot.py", "--weight_decay", "0.1"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--weight_decay: setfit_fewshot.py does not use this flag of transformers' Trainer" in result.stderr


def help_defaults(script: str) -> dict[str, str]:
    result = run_script([sys.executable, f"trainers/{script}.py", "--help"])
    options = " ".join(result.stdout.split()).split("options:", 1)[1]  # the flags' section, unwrapped
    flags = ("learning_rate", "per_device_train_batch_size", "num_train_epochs", "train_sampling_strategy")
    found = {flag: re.search(rf"--{flag}\b.*?\(default: ([^)]*)\)", options) for flag in flags}
    return {flag: match[1] for flag, match in found.items() if match}


def run_main(script: str, model: str, data_args: DataArguments, output_dir: str, **training) -> dict:
    """A script's main() called from Python with its dataclasses' defaults, but for `training`."""
    trainer = load_trainer(script)
    *own, training_class = trainer.ARGUMENTS[2:]
    method_args = [cls(num_iterations=1) if cls.__name__ == "SetFitArguments" else cls() for cls in own]
    return trainer.main(model_args_for(model), data_args, *method_args, training_class(output_dir, **training))


@pytest.mark.parametrize("script", ["full_finetune", "setfit_fewshot"])
def test_a_python_call_trains_with_the_defaults_help_shows(script, tiny_bert, data_args, tmp_path):
    """main() given the dataclasses' defaults trains as the command line does: one place for the recipe."""
    shown = help_defaults(script)
    used = run_main(script, tiny_bert, data_args, str(tmp_path / "run"), max_steps=2)["hyperparameters"]
    assert float(shown["learning_rate"]) == used["learning_rate"]
    assert int(shown["per_device_train_batch_size"]) == used["per_device_train_batch_size"]
    assert float(shown["num_train_epochs"]) == used["num_train_epochs"]
    if script == "full_finetune":
        assert shown["train_sampling_strategy"] == used["train_sampling_strategy"] == "group_by_length"
    else:
        assert float(shown["num_train_epochs"]) == 3  # the book trains SetFit's body for 3 epochs


@pytest.mark.parametrize("script", SCRIPTS)
def test_report_to_tensorboard_writes_event_files(script, tiny_bert, data_args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a stray ./runs would land
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)  # as in a fresh process
    out = str(tmp_path / "run")
    run_main(script, tiny_bert, data_args, out, max_steps=2, report_to="tensorboard", logging_steps=1)
    events = glob.glob(os.path.join(out, "**", "events.out.tfevents.*"), recursive=True)
    assert events, f"no TensorBoard event file under {out}"
    assert not (tmp_path / "runs").exists(), "event files written outside the output folder"


OUT_OF_RANGE = {
    "data": (
        ["--max_seq_length", "1", "--samples_per_label", "0", "--validation_split_percentage", "100",
         "--text_column_name", "review", "--label_column_name", "review"],
        ["--max_seq_length 1: at least 3 (two special tokens and a word)",
         "--samples_per_label 0: at least 1 (leave it out to train on all)",
         "--validation_split_percentage 100: from 1 to 99",
         "--text_column_name and --label_column_name are both 'review'"],
    ),
    "training": (
        ["--per_device_train_batch_size", "0", "--per_device_eval_batch_size", "0", "--learning_rate=-1e-3",
         "--num_train_epochs", "0", "--seed=-1"],
        ["--per_device_train_batch_size 0: at least 1",
         "--per_device_eval_batch_size 0: at least 1",
         "--learning_rate -0.001: must be positive",
         "--num_train_epochs 0.0: must be positive (or set --max_steps)",
         "--seed -1: from 0 to 2**32 - 1"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("flags", OUT_OF_RANGE)
@pytest.mark.parametrize("script", SCRIPTS)
def test_numbers_out_of_range_are_named_when_the_flags_are_read(script, flags):
    """torch, setfit or the tokenizer met them later with a traceback of their own, or the run trained nothing."""
    argv, problems = OUT_OF_RANGE[flags]
    with pytest.raises(InputError) as err:
        parse_cli(load_trainer(script).ARGUMENTS, "", argv=argv)
    assert err.value.problems == problems


def test_a_masking_share_outside_0_to_1_is_one_line_under_accelerate_launch(tmp_path):
    result = run_script([*readme_launcher(), "trainers/mlm_then_classify.py", "--mlm_probability", "0",
                         "--output_dir", str(tmp_path / "out")])  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[0] == "error: --mlm_probability 0.0 must lie strictly between 0 and 1"
    assert not os.path.exists(tmp_path / "out")
