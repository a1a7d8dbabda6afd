"""results.json: one schema for every method, so the report and the Space's leaderboard can compare them."""

import json
import os
import resource
import sys
from importlib.metadata import PackageNotFoundError, version

import torch

RESULTS_FILE = "results.json"
LIBRARIES = ("torch", "transformers", "datasets", "accelerate", "huggingface_hub", "setfit", "sentence-transformers")


def build_results(
    *,
    method: str,
    base_model: str,
    dataset: str,
    label_names: list[str],
    num_train_samples: int,
    eval_split: str,
    metrics: dict,
    train_runtime_s: float,
    train_samples_per_second: float,
    trainable_params: int,
    total_params: int,
    seed: int,
    hyperparameters: dict,
    num_processes: int = 1,
    method_details: dict | None = None,
    early_stopping: dict | None = None,
    problem_type: str = "single_label_classification",
    threshold: float | None = None,
    train_label_counts: dict[str, int] | None = None,
    class_weights: dict[str, float] | None = None,
) -> dict:
    """The results of one run. Cost figures are read here, right after training, on the calling process.

    `early_stopping` (shared.training.early_stopping_summary), with --early_stopping_patience: where training
    stopped (stopped_at_step of max_steps) and which step's weights the model holds (best_step); else null.
    `problem_type` is transformers' name for one label per text or a set of them (multi_label_classification);
    a multi-label model predicts each label whose probability reaches `threshold`, which the app reads here."""
    reference, on_hub = model_reference(base_model)
    return {
        "method": method,
        "base_model": reference,
        "base_model_on_hub": on_hub,
        "dataset": dataset,
        "labels": label_names,
        "problem_type": problem_type,
        "threshold": threshold,
        "train_label_counts": train_label_counts,
        "class_weights": class_weights,
        "num_train_samples": num_train_samples,
        "eval_split": eval_split,
        "metrics": metrics,
        "train_runtime_s": round(train_runtime_s, 3),
        "train_samples_per_second": round(train_samples_per_second, 3),
        "trainable_params": trainable_params,
        "total_params": total_params,
        "peak_memory_mb": peak_memory_mb(),
        "device": device_description(num_processes),
        "seed": seed,
        "hyperparameters": hyperparameters,
        "method_details": method_details or {},
        "early_stopping": early_stopping,
        "versions": library_versions(),
    }


def model_reference(name_or_path: str) -> tuple[str, bool]:
    """How results and cards name a model, and whether that name is a Hub id: a local folder is named by its
    folder name, never by a path of the training machine."""
    if os.path.isdir(name_or_path):
        return os.path.basename(os.path.normpath(name_or_path)), False
    return name_or_path, True


def write_results(output_dir: str, results: dict) -> str:
    path = os.path.join(output_dir, RESULTS_FILE)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    return path


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by torch on CUDA; on CPU, the process's peak resident memory."""
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB on Linux
    return round(kilobytes / (2**20 if sys.platform == "darwin" else 2**10), 1)


def device_description(num_processes: int = 1) -> str:
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu"
    return device if num_processes == 1 else f"{device} x {num_processes} processes"


def library_versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
