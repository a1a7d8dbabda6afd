"""trainers/setfit_fewshot.py on a tiny sentence-transformers body: the saved model and its pickle-free head
(several processes: tests/test_setfit_ddp.py)."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
from huggingface_hub import HfApi
from setfit import SetFitModel

from conftest import TOKEN, USER, load_trainer, run_script, setfit_predict_in_fresh_process
from shared.args import DataArguments, ModelArguments
from shared.setfit_head import PortableHead

setfit_fewshot = load_trainer("setfit_fewshot")
TEXTS = ["great fun movie", "dull boring plot", "the film was charming", "weak tedious story", "a superb cast"]


def quick_args(tmp_path, head_type="logistic"):
    """SetFit's own arguments and the shared training ones, for a quick run."""
    return (
        setfit_fewshot.SetFitArguments(num_iterations=2, head_type=head_type, head_num_epochs=2),
        setfit_fewshot.SetFitTrainingArguments(output_dir=str(tmp_path / "setfit"), num_train_epochs=1),
    )


@pytest.fixture
def few_shot(data_args) -> DataArguments:
    data_args.samples_per_label = 8
    return data_args


@pytest.mark.parametrize("head_type", ["logistic", "differentiable"])
def test_saved_model_and_the_pickle_free_head_agree(head_type, tiny_sentence_transformer, few_shot, tmp_path):
    args, training = quick_args(tmp_path, head_type)
    results = setfit_fewshot.main(ModelArguments(tiny_sentence_transformer), few_shot, args, training)

    out = training.output_dir
    assert {"model.safetensors", "model_head.pkl", "model_head.safetensors", "config_setfit.json", "README.md",
            "results.json"} <= set(os.listdir(out))  # fmt: skip
    assert results["method"] == "setfit_fewshot" and results["num_train_samples"] == 16  # 8 per label
    assert results["hyperparameters"]["head_type"] == head_type
    assert "library_name: setfit" in open(os.path.join(out, "README.md")).read()

    pickled = SetFitModel.from_pretrained(out)
    portable = PortableHead.load(out)
    embeddings = _numpy(pickled.encode(TEXTS))
    expected = _numpy(pickled.predict_proba(TEXTS))
    np.testing.assert_allclose(portable.predict_proba(embeddings), expected, rtol=1e-5, atol=1e-6)
    ids = [pickled.labels.index(label) for label in pickled.predict(TEXTS)]
    assert portable.predict(embeddings) == ids


def _numpy(values) -> np.ndarray:
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def test_loads_in_a_fresh_process_with_label_names(tiny_sentence_transformer, few_shot, tmp_path):
    args, training = quick_args(tmp_path)
    setfit_fewshot.main(ModelArguments(tiny_sentence_transformer), few_shot, args, training)

    labels = setfit_predict_in_fresh_process(training.output_dir, TEXTS)
    assert len(labels) == len(TEXTS) and set(labels) <= {"negative", "positive"}


def test_help_says_which_process_trains():
    result = run_script([sys.executable, "trainers/setfit_fewshot.py", "--help"])
    assert result.returncode == 0
    assert "every process trains the body" in " ".join(result.stdout.split())
    for flag in ("--num_iterations", "--head_type", "--samples_per_label", "--push_to_hub"):
        assert flag in result.stdout


@pytest.mark.parametrize(("bf16", "launched"), [(True, None), (False, None), (False, "bf16")])
def test_the_precision_asked_for_trains_the_body_and_leaves_nothing_behind(
    bf16, launched, tiny_sentence_transformer, few_shot, tmp_path, monkeypatch
):
    """The precision of the flags reaches setfit's inner Trainer, whatever the launcher's (--bf16 false under
    `accelerate launch --mixed_precision bf16`), and a run called from Python leaves no precision behind for the
    runs that follow in the same process (nor for the processes they launch)."""
    if launched:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launched)
    else:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    args, training = quick_args(tmp_path)
    training.bf16 = bf16
    results = setfit_fewshot.main(ModelArguments(tiny_sentence_transformer), few_shot, args, training)

    assert results["hyperparameters"]["mixed_precision"] == ("bf16" if bf16 else "no")
    assert os.environ.get("ACCELERATE_MIXED_PRECISION") == launched


def test_trains_from_a_hub_repo_in_the_older_sentence_transformers_layout(
    hub, tiny_sentence_transformer, few_shot, tmp_path
):
    """Its encoder and config.json are in a subfolder that modules.json names: checking the repo for a config.json
    at its root refused a model that loads."""
    old = tmp_path / "old-layout"
    shutil.copytree(tiny_sentence_transformer, old)
    modules = json.loads((old / "modules.json").read_text())
    encoder = next(module for module in modules if module["path"] == "")
    encoder["path"] = "0_Transformer"
    (old / "modules.json").write_text(json.dumps(modules))
    os.mkdir(old / "0_Transformer")
    for name in os.listdir(old):
        if os.path.isfile(old / name) and name not in (
            "modules.json",
            "config_sentence_transformers.json",
            "README.md",
        ):
            shutil.move(old / name, old / "0_Transformer" / name)
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(f"{USER}/old-layout")
    api.upload_folder(repo_id=f"{USER}/old-layout", folder_path=str(old))

    args, training = quick_args(tmp_path)
    results = setfit_fewshot.main(ModelArguments(f"{USER}/old-layout"), few_shot, args, training)
    assert results["base_model"] == f"{USER}/old-layout"
    assert os.path.isfile(os.path.join(training.output_dir, "model_head.safetensors"))
