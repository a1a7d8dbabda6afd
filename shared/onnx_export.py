"""The int8 ONNX files that serve a model on CPU, written beside its safetensors weights, and the record that says
which weights they were made from.

A model folder (a transformers classifier, or a SetFit model's sentence-transformers body) gets:

    onnx/model_quantized.onnx   the network in ONNX, its weights quantized to int8 by ONNX Runtime (dynamic
                                quantization: activations are quantized per batch as it runs, so no calibration
                                data), but for each layer's feed-forward output projection, which stays fp32
    onnx/export.json            the sha256 of each file the export read (model.safetensors, config.json, and for
                                SetFit the pooling modules) and of the int8 file; the network's inputs and output

shared.inference serves the int8 file only while every recorded file, the int8 file included, still has its
recorded hash: weights trained again, or edited by hand, leave a stale file behind, and a stale file is ignored (the
safetensors weights are served).
Why ONNX Runtime and not torch's dynamic quantization, or optimum: benchmarks/results/serving.md.

The transformers classifier exports its logits; the SetFit body its sentence embedding (pooling and normalization
included), and the head stays in model_head.safetensors, applied with numpy as before.
"""

import hashlib
import json
import os
import tempfile

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from shared.hub import load_pretrained, load_sentence_transformer

ONNX_DIR = "onnx"
INT8_FILE = f"{ONNX_DIR}/model_quantized.onnx"
RECORD_FILE = f"{ONNX_DIR}/export.json"
SETFIT_CONFIG = "config_setfit.json"
# The files whose content decides the exported network; tokenizer files are read at serving time, not baked in.
SOURCE_FILES = ["model.safetensors", "config.json", "modules.json", "sentence_bert_config.json"]
OPSET = 17


def export_int8(folder: str) -> str:
    """Write onnx/model_quantized.onnx and onnx/export.json into a saved model's folder; returns the ONNX path.

    The folder is a transformers sequence classifier, or a SetFit model (told by its config_setfit.json).
    """
    os.makedirs(os.path.join(folder, ONNX_DIR), exist_ok=True)
    path, record_path = os.path.join(folder, INT8_FILE), os.path.join(folder, RECORD_FILE)
    if os.path.exists(record_path):
        os.remove(record_path)  # until the new file is complete, no record vouches for it
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = os.path.join(scratch, "model.onnx")
        inputs, output = export_fp32(folder, fp32)
        quantize(fp32, path)
    record = {"source_sha256": source_hashes(folder), "int8_sha256": _sha256(path), "inputs": inputs, "output": output}
    with open(record_path, "w") as f:
        json.dump(record, f, indent=2)
    return path


def export_fp32(folder: str, path: str) -> tuple[list[str], str]:
    """The folder's network in ONNX, unquantized, to `path`; returns its input names and its output's name."""
    setfit = os.path.exists(os.path.join(folder, SETFIT_CONFIG))
    network, tokenizer, output = (_setfit_body if setfit else _classifier)(folder)
    # One short text and one longer: the exporter sees batch and sequence as the dynamic axes they are.
    sample = tokenizer(["a short text", "and a longer text than the first"], padding=True, return_tensors="pt")
    inputs = [name for name in tokenizer.model_input_names if name in sample]
    network.names = inputs
    # The TorchScript exporter (dynamo=False): the dynamo exporter needs onnxscript and gives no faster graph.
    torch.onnx.export(
        network,
        tuple(sample[name] for name in inputs),
        path,
        input_names=inputs,
        output_names=[output],
        dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in inputs}, output: {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    return inputs, output


def matching_int8(folder: str) -> str | None:
    """The folder's int8 ONNX file when it was made from the weights the folder holds now; otherwise None."""
    path, record_path = os.path.join(folder, INT8_FILE), os.path.join(folder, RECORD_FILE)
    if not (os.path.exists(path) and os.path.exists(record_path)):
        return None
    with open(record_path) as f:
        record = json.load(f)
    # The ONNX file itself is checked too: a truncated download or a file of another export is no match either.
    if record.get("int8_sha256") != _sha256(path) or record.get("source_sha256") != source_hashes(folder):
        return None
    return path


def source_hashes(folder: str) -> dict[str, str]:
    """sha256 of each of SOURCE_FILES that the folder has, and of the SetFit body's pooling configs."""
    names = [name for name in SOURCE_FILES if os.path.exists(os.path.join(folder, name))]
    modules = os.path.join(folder, "modules.json")
    if os.path.exists(modules):
        with open(modules) as f:
            for module in json.load(f):
                config = os.path.join(module.get("path", ""), "config.json")
                if module.get("path") and os.path.exists(os.path.join(folder, config)):
                    names.append(config)
    return {name: _sha256(os.path.join(folder, name)) for name in names}


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _classifier(folder: str):
    tokenizer = load_pretrained(AutoTokenizer, folder)
    # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime's quantizer turns into int8 MatMuls.
    model = load_pretrained(AutoModelForSequenceClassification, folder, attn_implementation="eager").eval()
    return _Positional(model, lambda batch: model(**batch).logits), tokenizer, "logits"


def _setfit_body(folder: str):
    body = load_sentence_transformer(folder).eval()
    return _Positional(body, lambda batch: body(batch)["sentence_embedding"]), body.tokenizer, "sentence_embedding"


class _Positional(torch.nn.Module):
    """A network that takes a dict of named tensors, as one that takes them by position (how the exporter calls
    it) and returns one tensor."""

    def __init__(self, network: torch.nn.Module, call):
        super().__init__()
        self.network, self.call, self.names = network, call, []

    def forward(self, *tensors):
        return self.call(dict(zip(self.names, tensors, strict=True)))


# The feed-forward block's second projection, by the exporter's node names: BERT, RoBERTa, MPNet and DeBERTa name it
# output.dense (as the attention block names its own, which is quantized), DistilBERT ffn.lin2.
FFN_OUTPUT_NODES = ("/output/dense/", "/ffn/lin2/")


def quantize(fp32: str, int8: str) -> None:
    """The int8 file that shared.inference serves, from the fp32 export."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weights: per-tensor scales changed 3.5% of the demo classifier's labels, per-channel none
    # (benchmarks/results/serving.md).
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=_ffn_outputs(fp32))


def _ffn_outputs(fp32: str) -> list[str]:
    """The MatMuls that stay fp32: each layer's feed-forward output projection. Its input, after GELU, carries the
    large outlier values of BERT-family encoders, which int8 rounds worst. Kept in fp32 on the three demo
    classifiers, int8 changed 0.5-0.6% of 800 texts' labels instead of 0.6-1.5% and cost at most 0.4 point of macro
    F1 instead of 1.0, for about a quarter of the int8 speed (benchmarks/results/serving.md)."""
    import onnx

    graph = onnx.load(fp32, load_external_data=False).graph
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and "attention" not in node.name and any(p in node.name for p in FFN_OUTPUT_NODES)
    ]
