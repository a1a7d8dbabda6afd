"""Assemble benchmarks/results.md: a header (machine, CPU, threads, versions, the command, the date), then each
benchmark's section from benchmarks/results/<name>.md, in the order given.

    python benchmarks/_report.py [--results_dir DIR] [--output FILE] "<the command that ran them>" NAME ...
"""

import argparse
import datetime
import importlib.metadata
import os
import platform

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
PACKAGES = ("torch", "transformers", "setfit", "sentence-transformers", "accelerate")


def cpu_name() -> str:
    """The model name, and the family and model numbers: a name as vague as "AMD EPYC" hides the generation, and
    bf16 speedups differ by generation (full_finetune ran 2.6x the book's recipe on family 26, 1.7x on the machine
    of an earlier session)."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return platform.processor() or "unknown"
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    name = fields.get("model name", platform.processor() or "unknown")
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name


def header(command: str) -> str:
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} absent")
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    bf16 = [name for name in ("avx512_bf16", "amx_bf16") if name in flags]
    return "\n".join([
        "# Benchmarks",
        "",
        f"- machine: {platform.node() or 'unknown'}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end (other work shares this machine)",
        f"- CPU: {cpu_name()}; bf16 instructions: {', '.join(bf16) or 'none'}",
        f"- versions: Python {platform.python_version()}, {', '.join(versions)}",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "- threads: each section states its own (the same for both sides of a comparison)",
        "",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results_dir", default=os.path.join(BENCHMARKS, "results"))
    parser.add_argument("--output", default=os.path.join(BENCHMARKS, "results.md"))
    parser.add_argument("command")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    parts = [header(args.command)]
    for name in args.names:
        path = os.path.join(args.results_dir, f"{name}.md")
        parts.append(open(path).read() if os.path.exists(path) else f"## {name}\n\n_{name}.py wrote no results._\n")
    # Kept from elsewhere: the GPU figures (gpu.sh's gpu.md and gpu-trainer.md, copied in from the lent machine's
    # $OUT) and the hand-written account of what each thing tried gave.
    kept = [os.path.join(args.results_dir, f"{name}.md") for name in ("gpu", "gpu-trainer")]
    for path in (*kept, os.path.join(BENCHMARKS, "findings.md")):
        if os.path.exists(path) and os.path.basename(path)[:-3] not in args.names:
            parts.append(open(path).read())
    with open(args.output, "w") as f:
        f.write("\n".join(parts))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
