"""The project's own trainer on a GPU, launched as a user launches it (`bash benchmarks/gpu.sh --trainer` runs this),
where benchmarks/_gpu.py times a hand-written loop: `accelerate launch trainers/full_finetune.py` with the book's
recipe as flags, against its defaults and against --torch_compile. samples/s are results.json's: the Trainer's
over the whole epoch, a compiled run's compilation and the project's end-of-epoch validation included.

Throughput: a BERT-base-shaped encoder (random weights, saved as a local checkpoint: the machine cannot download
bert-base) on varied-length texts. Accuracy: the half-precision MiniLM copy (.gpu-minilm; every method trains in
fp32 weights whatever a checkpoint stores) fine-tuned on data/demo_reviews at lr 1e-4, over several seeds.

    python benchmarks/_gpu_trainer.py --out DIR [--dry_run --accuracy_model FOLDER] [--runs ...] [--seeds ...]

The defaults fit one H200's 10-minute window (about 7 minutes: each launch pays 20-30 s of start-up, CUDA and saving
a 440 MB checkpoint besides its training); `--runs graphs,large`, `--runs nofilter,workers` (what the Trainer's
host work per step costs) and `--runs noeval,random,fp32` (which of the defaults' differences from the book's
flags slows the epoch's first half) are the rest, for more windows.
"""

import argparse
import csv
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from transformers import AutoTokenizer, BertModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _gpu import encoder_config, flops_per_sequence, gpu_parser  # noqa: E402
from _workloads import DEMO, ROOT, varied_texts  # noqa: E402

BOOK_FLAGS = ["--train_sampling_strategy", "random", "--bf16", "false", "--eval_strategy", "no"]
# name -> (what the run is, its flags on top of the common ones)
RUNS = {
    "book": ("book recipe as flags (anchor)", BOOK_FLAGS),
    "defaults": ("full_finetune defaults", []),
    "compiled": ("defaults + --torch_compile", ["--torch_compile"]),
    "graphs": ("defaults + --torch_compile_mode reduce-overhead", ["--torch_compile_mode", "reduce-overhead"]),
    "large": ("defaults + --torch_compile, batch 128 (throughput only)",
              ["--torch_compile", "--per_device_train_batch_size", "128"]),
    # The Trainer's step is host-bound at batch 16 (48 ms against 32 ms for gpu.sh's loop): what of it these take.
    # The loss's NaN check for the logs waits for the GPU at every step; so does the divergence guard's check of the
    # gradient norm, which this leaves on: little gain here says the waits are not the cost, or that both must go.
    "nofilter": ("defaults + --logging_nan_inf_filter false", ["--logging_nan_inf_filter", "false"]),
    "workers": ("defaults + --dataloader_num_workers 4", ["--dataloader_num_workers", "4"]),
    # Over the whole epoch the defaults ran 0.80x the book's flags, though 1.09x in its second half: each of these
    # takes one of the defaults' differences from the book away, to find which one costs the first half.
    "noeval": ("defaults + --eval_strategy no", ["--eval_strategy", "no"]),
    "random": ("defaults + --train_sampling_strategy random", ["--train_sampling_strategy", "random"]),
    "fp32": ("defaults + --bf16 false", ["--bf16", "false"]),
}  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = gpu_parser(__doc__, "gpu-trainer.json and gpu-trainer.md")
    parser.add_argument("--texts", type=int, default=10000, help="Training texts of the throughput runs.")
    parser.add_argument("--runs", default="book,defaults,compiled", help=f"Throughput runs, of {','.join(RUNS)}.")
    parser.add_argument("--accuracy_runs", default="book,defaults", help="Recipes of the accuracy runs.")
    parser.add_argument("--seeds", default="1,2,3", help="Seeds of each accuracy recipe.")
    parser.add_argument("--timeout", type=int, default=170, help="Seconds one launch may take.")
    args = parser.parse_args()
    args.work = tempfile.mkdtemp(prefix="gpu-trainer-")  # checkpoints of 440 MB: not in --out, which comes back
    return args


def launch(args, name: str, model: str, data: dict[str, str], flags: list[str], seed: int = 42) -> dict:
    """One `accelerate launch trainers/full_finetune.py` with the common flags and `flags`; its results.json."""
    output_dir = os.path.join(args.work, f"{name}-{seed}")
    if args.dry_run:
        flags = dry_run_flags(flags)
    command = [sys.executable, "-m", "accelerate.commands.launch", "-q", "--config_file",
               os.path.join(ROOT, "accelerate_config.yaml"), os.path.join(ROOT, "trainers", "full_finetune.py"),
               "--model_name_or_path", model, "--train_file", data["train"], "--test_file", data["test"],
               "--output_dir", output_dir, "--overwrite_output_dir", "--max_seq_length", "128",
               "--learning_rate", "1e-4", "--seed", str(seed), "--disable_tqdm", "true", *flags]  # fmt: skip
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join(
        [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", flush=True)
        raise RuntimeError(f"{name}: full_finetune exited {done.returncode}")
    with open(os.path.join(output_dir, "results.json")) as f:
        results = json.load(f)
    first, steady = half_rates(output_dir, flags) if "--report_to" in flags else (None, None)
    return {"samples_per_s": results["train_samples_per_second"], "train_s": results["train_runtime_s"],
            "first_half_samples_per_s": first, "steady_samples_per_s": steady,
            "f1_macro": results["metrics"]["f1_macro"], "launch_s": time.perf_counter() - started}  # fmt: skip


def half_rates(output_dir: str, flags: list[str]) -> tuple[float | None, float | None]:
    """samples/s over the first and the second half of the epoch, from the wall times of the loss that the Trainer
    logged to TensorBoard (each log waits for the GPU). The second half is the steady rate: after compilation, and
    after any recompilation for new lengths."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    batch = (
        int(flags[flags.index("--per_device_train_batch_size") + 1])
        if "--per_device_train_batch_size" in flags
        else 16
    )
    (events_file,) = glob.glob(os.path.join(output_dir, "runs", "**", "events.out.tfevents.*"), recursive=True)
    losses = EventAccumulator(os.path.dirname(events_file)).Reload().Scalars("train/loss")
    middle = len(losses) // 2
    return _rate_between(losses[: middle + 1], batch), _rate_between(losses[middle:], batch)


def _rate_between(logged: list, batch: int) -> float | None:
    if len(logged) < 2:
        return None
    return (logged[-1].step - logged[0].step) * batch / (logged[-1].wall_time - logged[0].wall_time)


def dry_run_flags(flags: list[str]) -> list[str]:
    """Compiling takes minutes on a CPU: a dry run's compiled runs have dynamo trace with the eager backend."""
    compiled = any(flag.startswith("--torch_compile") for flag in flags)
    flags = [f for f in flags if f not in ("--torch_compile", "--torch_compile_mode", "reduce-overhead")]
    return [*flags, "--torch_compile_backend", "eager"] if compiled else flags


def write_csv(path: str, rows: list[tuple[str, str]]) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def throughput_setup(args) -> tuple[str, dict[str, str], float, float]:
    """The random BERT-base checkpoint, the varied-length texts, and their mean real tokens and FLOPs per text."""
    tokenizer = AutoTokenizer.from_pretrained(args.accuracy_model)
    config = encoder_config(args.dry_run, tokenizer.vocab_size)
    model_dir = os.path.join(args.work, "bert-base-random")
    torch.manual_seed(0)
    BertModel(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rows = varied_texts("train", 64 if args.dry_run else args.texts, seed=0)
    test_rows = varied_texts("test", 32 if args.dry_run else 500)
    data = {
        split: write_csv(os.path.join(args.work, f"{split}.csv"), r)
        for split, r in (("train", rows), ("test", test_rows))
    }
    lengths = [len(ids) for ids in tokenizer([text for text, _ in rows], truncation=True, max_length=128)["input_ids"]]
    return model_dir, data, statistics.mean(lengths), statistics.mean(flops_per_sequence(config, n) for n in lengths)


def main() -> None:
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    figures = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (dry run)",
               "torch": torch.__version__, "throughput": [], "accuracy": []}  # fmt: skip
    runs = [name for name in args.runs.split(",") if name]
    model_dir, data, tokens, flops = throughput_setup(args) if runs else (None, None, None, None)
    for name in runs:
        logged = ["--report_to", "tensorboard", "--logging_steps", "1" if args.dry_run else "20"]
        try:
            run = {"name": RUNS[name][0], **launch(args, name, model_dir, data, [*RUNS[name][1], *logged])}
        except (RuntimeError, subprocess.TimeoutExpired) as err:  # one failed run must not cost the others' figures
            print(f"{RUNS[name][0]}: failed: {err}", flush=True)
            continue
        steady = run["steady_samples_per_s"]
        run["real_token_mfu"] = steady and steady * flops / (args.peak_tflops * 1e12)
        run["tokens_per_s"] = steady and steady * tokens
        figures["throughput"].append(run)
        save(args, figures)
    demo = {"train": os.path.join(DEMO, "train.csv"), "test": os.path.join(DEMO, "test.csv")}
    for name in filter(None, args.accuracy_runs.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            run = {"name": RUNS[name][0], "seed": seed,
                   **launch(args, f"{name}-accuracy", args.accuracy_model, demo, RUNS[name][1], seed)}  # fmt: skip
            figures["accuracy"].append(run)
            save(args, figures)
    print(report(figures))


def save(args, figures: dict) -> None:
    """After every run, so that what was measured comes back even when a later run fails or time runs out."""
    print(json.dumps((figures["throughput"] + figures["accuracy"])[-1]), flush=True)
    with open(os.path.join(args.out, "gpu-trainer.json"), "w") as f:
        json.dump(figures, f, indent=2)
    with open(os.path.join(args.out, "gpu-trainer.md"), "w") as f:
        f.write(report(figures))


def report(figures: dict) -> str:
    lines = [
        "## GPU: the project's trainer against the book's recipe",
        "",
        f"Device: {figures['device']}; torch {figures['torch']}. `accelerate launch trainers/full_finetune.py`, "
        "samples/s from results.json (the whole epoch: compilation and the project's validation included).",
        "",
        "First half and steady: samples/s over the epoch's first half (from its first logged step) and second half "
        "(after compiling), from the Trainer's TensorBoard log; real tokens/s and real-token MFU are of the steady "
        "rate.",
        "",
        "| run | samples/s (epoch) | vs book | first half | vs book | steady samples/s | vs book | real tokens/s | "
        "MFU | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    book = figures["throughput"][0] if figures["throughput"] else None
    for run in figures["throughput"]:
        lines.append(
            f"| {run['name']} | {_rate(run['samples_per_s'], book['samples_per_s'])} | "
            f"{_rate(run['first_half_samples_per_s'], book['first_half_samples_per_s'])} | "
            f"{_rate(run['steady_samples_per_s'], book['steady_samples_per_s'])} | "
            f"{_number(run['tokens_per_s'])} | {_number(run['real_token_mfu'], '.1%')} | {run['train_s']:.1f} |"
        )
    lines += [
        "",
        "Accuracy: MiniLM on data/demo_reviews, one epoch at lr 1e-4, macro F1 on its test split, by seed.",
        "",
        "| recipe | macro F1 by seed | mean | samples/s (mean) |",
        "|---|---|---|---|",
    ]
    for name in dict.fromkeys(run["name"] for run in figures["accuracy"]):
        runs = [run for run in figures["accuracy"] if run["name"] == name]
        scores = ", ".join(f"{run['f1_macro']:.3f} (seed {run['seed']})" for run in runs)
        lines.append(
            f"| {name} | {scores} | {statistics.mean(r['f1_macro'] for r in runs):.3f} | "
            f"{statistics.mean(r['samples_per_s'] for r in runs):.0f} |"
        )
    return "\n".join(lines) + "\n"


def _rate(value: float | None, anchor: float | None) -> str:
    """A rate and its ratio to the anchor's, as two cells; empty where one was not measured."""
    return f"{_number(value)} | " + (f"{value / anchor:.2f}x" if value and anchor else "")


def _number(value: float | None, spec: str = ".0f") -> str:
    return "" if value is None else format(value, spec)


if __name__ == "__main__":
    main()
