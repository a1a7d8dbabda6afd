"""The int8 ONNX serving path: --export_onnx writes and publishes the files, shared.inference serves them only while
they match the weights, and they give the labels that the safetensors weights give."""

import logging
import os
import random
import re
import shutil
import sys

import numpy as np
import onnx
import pytest
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from conftest import USER, load_module, load_trainer, model_args_for, run_script
from shared.args import parse_cli
from shared.inference import ONNX_INT8, TORCH, ModelSpec, Predictor, files_to_load, load_predictor
from shared.onnx_export import FFN_OUTPUT_NODES, INT8_FILE, RECORD_FILE, export_int8
from tiny import FAMILIES, review

# int8 weights and activations move a probability by a few hundredths on the tiny models; a label may differ only
# where the safetensors weights themselves are nearly undecided.
PROBABILITY_TOLERANCE = 0.05
TEXTS = [review(random.Random(seed), positive=seed % 2 == 0) for seed in range(24)]
TRAINERS = ["full_finetune", "freeze_layers", "setfit_fewshot", "mlm_then_classify"]


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> dict[str, str]:
    """Copies of the trained full fine-tuning and SetFit folders, with their int8 ONNX files."""
    root = tmp_path_factory.mktemp("exported")
    folders = {}
    for name in ("full", "setfit"):
        folders[name] = str(root / name)
        shutil.copytree(trained[name], folders[name])
        export_int8(folders[name])
    return folders


def assert_same_predictions(fast: Predictor, plain: Predictor, texts: list[str]) -> None:
    for a, b in zip(fast.predict(texts), plain.predict(texts), strict=True):
        assert a.scores == pytest.approx(b.scores, abs=PROBABILITY_TOLERANCE)
        if abs(b.scores[b.label] - 0.5) > PROBABILITY_TOLERANCE:  # two labels: 0.5 is a tie
            assert a.label == b.label


@pytest.mark.parametrize("name", ["full", "setfit"])
def test_the_int8_files_are_served_and_give_the_labels_of_the_safetensors_weights(name, trained, exported):
    fast, plain = load_predictor(ModelSpec(exported[name])), load_predictor(ModelSpec(trained[name]))

    assert (fast.backend, plain.backend) == (ONNX_INT8, TORCH)
    assert fast.kind == plain.kind and fast.labels == plain.labels
    assert_same_predictions(fast, plain, TEXTS)


@pytest.mark.parametrize("name", ["full", "setfit"])
def test_int8_files_of_other_weights_are_ignored(name, trained, exported, tmp_path, caplog):
    folder = tmp_path / name
    shutil.copytree(exported[name], folder)
    weights = load_file(folder / "model.safetensors")
    weights = {key: tensor + 0.01 if tensor.is_floating_point() else tensor for key, tensor in weights.items()}
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})  # trained again, say

    with caplog.at_level(logging.WARNING, logger="shared.inference"):
        stale = load_predictor(ModelSpec(str(folder)))

    assert stale.backend == TORCH
    assert f"{INT8_FILE} is damaged or made from other weights; serving safetensors" in caplog.text
    shutil.rmtree(folder / "onnx")
    plain = load_predictor(ModelSpec(str(folder)))  # the same weights, without any ONNX file
    for a, b in zip(stale.predict(TEXTS), plain.predict(TEXTS), strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


def test_an_int8_file_without_its_record_is_ignored(exported, tmp_path):
    folder = tmp_path / "full"
    shutil.copytree(exported["full"], folder)
    os.remove(folder / RECORD_FILE)
    assert load_predictor(ModelSpec(str(folder))).backend == TORCH


def test_an_int8_file_that_is_not_the_recorded_one_is_ignored(exported, tmp_path):
    folder = tmp_path / "full"
    shutil.copytree(exported["full"], folder)
    shutil.copy(os.path.join(exported["setfit"], INT8_FILE), folder / INT8_FILE)  # another model's export
    assert load_predictor(ModelSpec(str(folder))).backend == TORCH


def test_batches_are_sorted_by_length_and_predictions_come_back_in_input_order():
    batches = []

    def probabilities(texts):
        batches.append(texts)
        return np.array([[1.0, 0.0] if len(text) % 2 else [0.0, 1.0] for text in texts])

    predictor = Predictor("m", "transformers", ["odd", "even"], "", {}, probabilities)
    texts = ["a" * n for n in (9, 2, 7, 4, 1, 8, 3, 6)]
    predictions = predictor.predict(texts, batch_size=3)

    assert [p.label for p in predictions] == ["odd" if len(t) % 2 else "even" for t in texts]
    assert [[len(t) for t in batch] for batch in batches] == [[1, 2, 3], [4, 6, 7], [8, 9]]


def test_loading_from_the_hub_fetches_the_int8_files_and_nothing_else_of_onnx():
    files = ["config.json", "model.safetensors", INT8_FILE, RECORD_FILE, "onnx/model.onnx", "onnx/model_O4.onnx"]
    assert files_to_load(files) == ["config.json", "model.safetensors", INT8_FILE, RECORD_FILE]


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_takes_export_onnx(trainer):
    module = load_trainer(trainer)
    parsed = parse_cli(module.ARGUMENTS, "", ["--output_dir", "out", "--export_onnx"])
    assert parsed[-1].export_onnx is True


def test_export_onnx_through_the_trainers_publishes_the_files_that_load_back_by_repo_id(
    hub, tiny_bert, tiny_sentence_transformer, data_args, training_args, tmp_path
):
    training_args.export_onnx, training_args.push_to_hub = True, True
    training_args.hub_model_id = f"{USER}/full-int8"
    load_trainer("full_finetune").main(model_args_for(tiny_bert), data_args, training_args)
    setfit = load_module("trainers/setfit_fewshot.py")
    setfit_training = setfit.SetFitTrainingArguments(
        output_dir=str(tmp_path / "setfit"), num_train_epochs=1, max_steps=2, export_onnx=True, push_to_hub=True,
        hub_model_id=f"{USER}/setfit-int8",
    )  # fmt: skip
    setfit.main(model_args_for(tiny_sentence_transformer), data_args, setfit.SetFitArguments(2), setfit_training)

    api = HfApi(endpoint=hub.url)
    published = {f"{USER}/full-int8": training_args.output_dir, f"{USER}/setfit-int8": tmp_path / "setfit"}
    for repo_id, local in published.items():
        assert {INT8_FILE, RECORD_FILE} <= set(api.list_repo_files(repo_id))
        served = load_predictor(ModelSpec(repo_id))
        assert served.backend == ONNX_INT8
        shutil.rmtree(os.path.join(local, "onnx"))  # what the safetensors weights alone give
        assert_same_predictions(served, load_predictor(ModelSpec(str(local))), TEXTS)
        downloads = {path for method, path in hub.state.requests if method == "GET" and f"/{repo_id}/resolve/" in path}
        assert any(path.endswith(INT8_FILE) for path in downloads)


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_keeps_the_feed_forward_output_in_fp32_and_the_other_weights_int8(family, tiny_encoders, tmp_path):
    """Int8 rounds the feed-forward output projection worst (its input, after GELU, has the outliers): in every
    family, each layer's stays a float MatMul; every other weight of the encoder layers is int8."""
    folder = str(tmp_path / family)
    AutoModelForSequenceClassification.from_pretrained(tiny_encoders[family], num_labels=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_encoders[family]).save_pretrained(folder)
    graph = onnx.load(export_int8(folder)).graph
    weights = {initializer.name for initializer in graph.initializer}
    float_weights = [n.name for n in graph.node if n.op_type == "MatMul" and set(n.input) & weights]
    layers = AutoConfig.from_pretrained(folder).num_hidden_layers
    assert len(float_weights) == layers and all(
        any(pattern in name for pattern in FFN_OUTPUT_NODES) for name in float_weights
    ), float_weights
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) >= 4 * layers  # attention's four, the FFN's input


def test_the_exported_network_runs_on_every_batch_shape(exported):
    predictor = load_predictor(ModelSpec(exported["full"]))
    [one] = predictor.predict(["ok"])
    long = predictor.predict(["a long review " * 20] * 5)
    assert sum(one.scores.values()) == pytest.approx(1.0, abs=1e-5) and len(long) == 5


def test_the_serving_benchmark_runs_both_paths_side_by_side(tiny_bert, tiny_sentence_transformer, tmp_path):
    result = run_script(
        [sys.executable, "benchmarks/serving.py", "--quick", "--model_name_or_path", tiny_bert,
         "--setfit_model", tiny_sentence_transformer, "--models_dir", str(tmp_path / "models"),
         "--results_dir", str(tmp_path / "results")]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    section = (tmp_path / "results" / "serving.md").read_text()
    assert section in result.stdout
    assert re.search(r"\| texts x models per second \| \d+ \| \d+ \| [\d.]+x \|", section)
    assert re.search(r"\| /compare p50 \(ms, one text, four models\) \| [\d.]+ \| [\d.]+ \|", section)
    for method in TRAINERS:
        assert re.search(rf"\| {method} \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", section)
        assert (tmp_path / "models" / method / INT8_FILE).exists()


def test_a_staged_space_installs_onnxruntime(tmp_path):
    deploy = load_module("space/deploy.py")
    app = os.path.join(deploy.SPACE_DIR, deploy.APP_FILE)
    shutil.copy(app, tmp_path)
    for relative in deploy.shared_files(app):
        os.makedirs(tmp_path / os.path.dirname(relative), exist_ok=True)
        shutil.copy(os.path.join(deploy.ROOT, relative), tmp_path / relative)

    assert "shared/onnx_export.py" in deploy.shared_files(app)
    assert [r for r in deploy.requirements(str(tmp_path), zero_gpu=False) if r.startswith("onnxruntime==")]
