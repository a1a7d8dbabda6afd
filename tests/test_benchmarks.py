"""The speed paths give what the plain paths give, and every benchmark runs end to end (on tiny models, --quick).

Speed itself is never asserted here: the targets live in benchmarks/ and benchmarks/results.md.
"""

import csv
import json
import os
import resource
import subprocess
import sys

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
)

from conftest import ROOT, load_trainer, model_args_for, run_in_fresh_process
from shared.args import RecipeTrainingArguments, bf16_by_default, parse_cli
from shared.classification import classifier_trainer
from shared.setfit_loss import DistinctTextsCosineSimilarityLoss

CPU_HAS_BF16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_masked_positions_trainer_gives_the_plain_loss_and_gradients(tiny_bert, tmp_path):
    """The masked-LM head run on the masked rows only: same loss, same gradient on every weight (fp32, 1e-5)."""
    mlm = load_trainer("mlm_then_classify")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = ["the soup was cold and bland", "a lovely little cafe", "never again, the staff were rude to us all"]
    collator = mlm.MaskingCollator(tokenizer, mlm_probability=0.3, seed=3)
    batch = collator([tokenizer(t, return_special_tokens_mask=True) for t in texts])
    batch.pop("special_tokens_mask", None)
    assert 0 < int((batch["labels"] != -100).sum()) < batch["labels"].numel()
    figures = {}
    for trainer_class in (mlm.Trainer, mlm.MaskedPositionsTrainer):
        torch.manual_seed(0)
        model = AutoModelForMaskedLM.from_pretrained(tiny_bert).eval()  # eval: no dropout, so runs compare
        args = TrainingArguments(str(tmp_path / trainer_class.__name__), report_to="none", use_cpu=True)
        trainer = trainer_class(model=model, args=args)
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        figures[trainer_class.__name__] = (loss.detach(), gradients(model))
    (plain_loss, plain_grads), (loss, grads) = figures["Trainer"], figures["MaskedPositionsTrainer"]
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == plain_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_distinct_texts_loss_gives_setfits_loss_and_gradients_with_fewer_rows(tiny_sentence_transformer):
    """Pairs that reuse texts, as setfit's do: the loss and gradients equal CosineSimilarityLoss's (fp32, 1e-5),
    and the body encodes each distinct text once."""
    pairs = [("good food", "great food"), ("good food", "awful service"), ("awful service", "rude staff"),
             ("great food", "good food"), ("rude staff", "good food")]  # fmt: skip
    labels = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    figures = {}
    for loss_class in (CosineSimilarityLoss, DistinctTextsCosineSimilarityLoss):
        torch.manual_seed(0)
        model = SentenceTransformer(tiny_sentence_transformer, device="cpu").eval()
        rows = []
        model[0].register_forward_pre_hook(lambda _, given, rows=rows: rows.append(given[0]["input_ids"].shape[0]))
        features = [model.tokenize([pair[side] for pair in pairs]) for side in (0, 1)]
        loss = loss_class(model)(features, labels)
        loss.backward()
        figures[loss_class.__name__] = (loss.detach(), gradients(model), sum(rows))
    plain_loss, plain_grads, plain_rows = figures["CosineSimilarityLoss"]
    loss, grads, rows = figures["DistinctTextsCosineSimilarityLoss"]
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-6)
    for name in plain_grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-5, atol=1e-5, msg=name)
    tokenizer = AutoTokenizer.from_pretrained(tiny_sentence_transformer)
    distinct = {tuple(tokenizer(text)["input_ids"]) for pair in pairs for text in pair}  # the tiny vocabulary's
    assert plain_rows == 10 and rows == len(distinct) < 10


# Minor page faults per 64 MiB tensor made, written and freed in turn, as a training step makes and frees the dense
# gradient of a large embedding (16,384 pages each when the block comes fresh from the system). In a fresh process:
# blocks that earlier tests freed into the heap would serve the tensor without a fault.
PAGE_FAULTS = """
import resource, statistics, torch
from shared.training import freed_memory_reused

def page_faults_per_block(blocks=5):
    faults = []
    for _ in range(blocks):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(16 * 2**20).sum()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(faults)

default = page_faults_per_block()
with freed_memory_reused():
    page_faults_per_block(1)  # the first block still comes from the system
    training = page_faults_per_block()
result({"default": default, "training": training, "after": page_faults_per_block()})
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator thresholds")
def test_training_reuses_large_freed_blocks_and_gives_the_default_back_after():
    """The median block of five: now and then one block still faults in afresh while training (one block in four, in
    one clean-clone run of six), which an average over the blocks let fail the test."""
    fresh = 16 * 2**20 * 4 // resource.getpagesize()
    faults = run_in_fresh_process(PAGE_FAULTS)
    assert faults["default"] > fresh / 2  # glibc's default: each block comes from the system afresh
    assert faults["training"] < fresh / 20
    assert faults["after"] > fresh / 2


def test_bf16_is_the_default_where_the_cpu_computes_in_bf16(tmp_path):
    """Unset, --bf16 follows the hardware; --bf16 false and --fp16 turn it off; --bf16 stays as given."""
    default = RecipeTrainingArguments(output_dir=str(tmp_path))
    assert default.bf16 is CPU_HAS_BF16
    assert default.mixed_precision == ("bf16" if CPU_HAS_BF16 else "no")
    (off,) = parse_cli([RecipeTrainingArguments], "", ["--output_dir", str(tmp_path), "--bf16", "false"])
    assert off.bf16 is False and off.mixed_precision == "no"


def test_the_flags_decide_the_precision_over_the_launchers(tmp_path, monkeypatch):
    """`accelerate launch --mixed_precision bf16` (or a config file that says it) is the default, and --bf16 false
    still trains in fp32: it trained in bf16."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    for bf16_flag, precision in ((["--bf16", "false"], "no"), ([], "bf16")):
        flags = ["--output_dir", str(tmp_path), "--eval_strategy", "no", *bf16_flag]
        (args,) = parse_cli([RecipeTrainingArguments], "", flags)
        trainer = Trainer(model=torch.nn.Linear(2, 2), args=args)
        assert (args.bf16, trainer.accelerator.mixed_precision) == (precision == "bf16", precision), bf16_flag


@pytest.mark.parametrize("native", [True, False], ids=["ampere-or-later", "emulating"])
def test_bf16_is_the_default_only_on_a_gpu_that_computes_in_bf16(native, monkeypatch):
    """torch reports bf16 as supported on a T4 or V100 too, where it is emulated (slower than fp32); only a GPU
    with bf16 arithmetic gets it by default."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    supported = lambda including_emulation=True: native or including_emulation  # noqa: E731 - torch's signature
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert bf16_by_default(None, fp16=False) is native
    assert bf16_by_default(None, fp16=True) is False and bf16_by_default(True, fp16=False) is True


@pytest.mark.skipif(not CPU_HAS_BF16, reason="bf16 is the default only on a CPU that computes in bf16")
def test_full_finetune_defaults_predict_what_fp32_predicts(tiny_bert, data_args, training_args, tmp_path):
    """The fast defaults (bf16 autocast, batches grouped by length) against fp32 in random order: the same
    labels on at least 15 of the 16 test texts, probabilities within 0.05 (bf16 keeps 8 bits of mantissa)."""
    full_finetune = load_trainer("full_finetune")
    probabilities = {}
    for name, settings in (("fast", {}), ("plain", {"bf16": False, "train_sampling_strategy": "random"})):
        args = RecipeTrainingArguments(**{**training_args.to_dict(), "output_dir": str(tmp_path / name), **settings})
        assert args.mixed_precision == ("bf16" if name == "fast" else "no")
        full_finetune.main(model_args_for(tiny_bert), data_args, args)
        probabilities[name] = predict(str(tmp_path / name), data_args.test_file)
    agree = (probabilities["fast"].argmax(-1) == probabilities["plain"].argmax(-1)).sum().item()
    assert agree >= 15, probabilities
    assert (probabilities["fast"] - probabilities["plain"]).abs().max() < 0.05


@pytest.mark.skipif(not CPU_HAS_BF16, reason="bf16 mixed precision is the default only on a CPU that computes in bf16")
def test_a_cpu_batch_is_padded_to_its_longest_text_only(tiny_bert, training_args):
    """Under bf16 on a CPU, no padding to multiples of 8 (a GPU's tensor cores want them; a CPU pays for each)."""
    assert training_args.mixed_precision == "bf16"
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = ["good", "a long and rather slow film that nobody should see", "fine soup"]
    tokenized = {"train": [], "validation": []}
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    trainer = classifier_trainer(model, tokenizer, tokenized, training_args)
    batch = trainer.data_collator([{**tokenizer(text), "labels": 0} for text in texts])
    longest = max(len(tokenizer(text)["input_ids"]) for text in texts)
    assert longest % 8 and batch["input_ids"].shape == (3, longest)


def test_the_divergence_guard_adds_no_pass_over_the_gradients(tiny_bert, data_args, training_args, monkeypatch):
    """The guard checks the gradient norm the Trainer computes at each step for clipping and logging: one norm over
    the gradients per step, not two."""
    passes = []
    foreach_norm = torch._foreach_norm

    def counted(tensors, *args, **kwargs):
        passes.append(sum(t.numel() for t in tensors))
        return foreach_norm(tensors, *args, **kwargs)

    monkeypatch.setattr(torch, "_foreach_norm", counted)
    load_trainer("full_finetune").main(model_args_for(tiny_bert), data_args, training_args)
    weights = sum(p.numel() for p in AutoModelForMaskedLM.from_pretrained(tiny_bert).bert.parameters())
    full_passes = [n for n in passes if n >= weights]  # over every gradient of the encoder (and the head)
    assert len(full_passes) == training_args.max_steps, passes


def predict(model_dir: str, test_file: str) -> torch.Tensor:
    with open(test_file, newline="") as f:
        texts = [row["review"] for row in csv.DictReader(f)]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)


def run_benchmark(*command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    process = subprocess.run(
        list(command), cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})}
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return process


@pytest.mark.parametrize(
    "name, model",
    [
        ("full_finetune", "tiny_bert"),
        ("setfit_fewshot", "tiny_sentence_transformer"),
        ("mlm_then_classify", "tiny_bert"),
    ],
)
def test_each_benchmark_runs_quick_and_writes_its_section(name, model, request, tmp_path):
    """`python benchmarks/<name>.py --quick` prints its table and writes results/<name>.md, anchor row first."""
    model_path = request.getfixturevalue(model)
    process = run_benchmark(sys.executable, f"benchmarks/{name}.py", "--quick", "--model", model_path,
                            "--threads", "1", "--results_dir", str(tmp_path))  # fmt: skip
    section = (tmp_path / f"{name}.md").read_text()
    assert section.startswith("## Training: ")
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| run ")]
    assert rows[0].split(" | ")[2] == "1.00x"  # the anchor, against itself
    assert len(rows) >= 2 and all(row.split(" | ")[1].replace(".", "").isdigit() for row in rows)
    assert "vs anchor" in process.stdout


def test_report_assembles_a_header_and_every_section(tmp_path):
    (tmp_path / "one.md").write_text("## One\n\nfigures\n")
    (tmp_path / "gpu.md").write_text("## GPU: copied in from the lent machine\n")
    (tmp_path / "gpu-trainer.md").write_text("## GPU: the trainer, copied in\n")
    output = tmp_path / "results.md"
    run_benchmark(sys.executable, "benchmarks/_report.py", "--results_dir", str(tmp_path), "--output", str(output),
                  "make bench", "one", "missing")  # fmt: skip
    text = output.read_text()
    assert text.startswith("# Benchmarks\n")
    for line in ("- command: `make bench`", "- CPU: ", "- versions: Python ", "torch ", "setfit ", "- date: "):
        assert line in text
    assert "## One\n\nfigures" in text and "_missing.py wrote no results._" in text
    sections = ("## One", "## GPU: copied in", "## GPU: the trainer", "## What was tried")
    assert [text.index(section) for section in sections] == sorted(text.index(section) for section in sections)


def test_gpu_script_dry_run_runs_every_path_on_the_cpu(tiny_bert, tmp_path):
    """gpu.sh --dry_run: the four throughput runs, both accuracy runs and 2-process DDP (gloo), the table last."""
    process = run_benchmark("bash", "benchmarks/gpu.sh", "--dry_run", "--accuracy_model", tiny_bert,
                            env={"OUT": str(tmp_path), "PYTHON": sys.executable})  # fmt: skip
    figures = json.loads((tmp_path / "gpu.json").read_text())
    assert [run["name"] for run in figures["throughput"]][0] == "book recipe (anchor)"
    assert len(figures["throughput"]) == 5 and all(run["samples_per_s"] > 0 for run in figures["throughput"])
    assert all(0 < run["real_token_mfu"] < 1 for run in figures["throughput"])
    assert [run["name"] for run in figures["accuracy"]] == ["book recipe (anchor)", "ours: bf16, grouped, fused AdamW"]
    assert figures["ddp"]["name"] == "ours, DDP on 2 processes" and figures["ddp"]["samples"] > 0
    table = (tmp_path / "gpu.md").read_text()
    assert process.stdout.rstrip().endswith(table.rstrip().splitlines()[-1])


def test_gpu_trainer_dry_run_launches_the_project_trainer_as_a_user_does(tiny_bert, tmp_path):
    """gpu.sh --trainer --dry_run: `accelerate launch trainers/full_finetune.py` with the book's flags and compiled
    (dynamo tracing with the eager backend on the CPU), steady rates read from the Trainer's TensorBoard log."""
    process = run_benchmark("bash", "benchmarks/gpu.sh", "--trainer", "--dry_run", "--accuracy_model", tiny_bert,
                            "--runs", "book,compiled", "--accuracy_runs", "defaults", "--seeds", "1,2",
                            env={"OUT": str(tmp_path), "PYTHON": sys.executable})  # fmt: skip
    figures = json.loads((tmp_path / "gpu-trainer.json").read_text())
    assert [run["name"] for run in figures["throughput"]] == ["book recipe as flags (anchor)",
                                                              "defaults + --torch_compile"]  # fmt: skip
    assert all(run["samples_per_s"] > 0 and run["first_half_samples_per_s"] > 0 and run["steady_samples_per_s"] > 0
               for run in figures["throughput"])  # fmt: skip
    assert [(run["name"], run["seed"]) for run in figures["accuracy"]] == [("full_finetune defaults", 1),
                                                                           ("full_finetune defaults", 2)]  # fmt: skip
    assert all(0 <= run["f1_macro"] <= 1 for run in figures["accuracy"])
    table = (tmp_path / "gpu-trainer.md").read_text()
    assert process.stdout.rstrip().endswith(table.rstrip().splitlines()[-1])
