"""`make compare`: the demo's pipeline on the user's own files. A row per method in the report; a method that cannot
use the data fails with its error in the report while the others still train; bad data stops it before training."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, run_script
from tiny import write_reviews_csv


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, str]:
    """10 reviews of each label: too few for SetFit's 16 per label, enough for the others."""
    root = tmp_path_factory.mktemp("small")
    return {
        "train": write_reviews_csv(str(root / "my.csv"), 20, 5),
        "test": write_reviews_csv(str(root / "t.csv"), 8, 6),
    }


def compare(tiny_bert, tiny_sentence_transformer, small, out, *more):
    return run_script(
        [sys.executable, "demo/run_demo.py", "--mode", "reduced", "--model_name_or_path", tiny_bert,
         "--setfit_model", tiny_sentence_transformer, "--train_file", small["train"], "--test_file", small["test"],
         "--text_column_name", "review", "--label_column_name", "sentiment", "--output_dir", str(out),
         "--launch", "0", *more]
    )  # fmt: skip


def test_a_failing_method_leaves_its_error_in_the_report_and_the_others_train(
    tiny_bert, tiny_sentence_transformer, small, tmp_path
):
    out = tmp_path / "compare"
    result = compare(tiny_bert, tiny_sentence_transformer, small, out)
    assert result.returncode == 1, result.stderr[-3000:]  # one method failed

    too_few = "error: --samples_per_label 16 needs 16 training examples of each label, but 'negative' has 9, "
    report = (out / "report.md").read_text()
    assert "Data: `my.csv, t.csv`: 18 training examples (after holding out validation), 8 test." in report
    for method in ["full_finetune", "freeze_layers", "mlm_then_classify"]:
        results = json.loads((out / method / "results.json").read_text())
        assert f"| {method} | " in report
        assert f"| {results['metrics']['accuracy']:.3f} | {results['metrics']['f1']:.3f} |" in report
    assert f"| setfit_fewshot | fast with little labeled data | failed: {too_few}" in report
    assert f"| TF-IDF + logistic regression (16 per label, SetFit's sample) | baseline | failed: {too_few}" in report
    verdicts = [line for line in report.splitlines() if " on F1: " in line]
    assert len(verdicts) == 3  # none for SetFit, which did not train
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Progress as each method runs: its header, its own output, then how it ended.
    assert "=== [3/4] setfit_fewshot ===" in result.stdout and "=== [4/4] mlm_then_classify ===" in result.stdout
    assert f"=== setfit_fewshot: failed: {too_few}" in result.stdout
    assert too_few in result.stderr  # the trainer's own error streamed through
    assert "3 of the four methods trained" in result.stdout


def test_bad_data_is_one_error_before_any_method_runs(tiny_bert, tiny_sentence_transformer, small, tmp_path):
    result = compare(tiny_bert, tiny_sentence_transformer, small, tmp_path / "out", "--label_column_name", "stars")
    assert result.returncode == 2
    assert "error:\n- train has no column 'stars' (--label_column_name)" in result.stderr
    assert "===" not in result.stdout


def test_make_compare_passes_the_users_data_to_the_pipeline():
    command = subprocess.run(
        ["make", "-n", "-o", ".venv/.setup-done", "compare", "TRAIN=my.csv", "TEST=my_test.csv", "TEXT=review",
         "LABEL=stars", "MODEL=bert-base-cased", "FLAGS=--num_train_epochs 2", "LAUNCH=0"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    words = " ".join(command.replace("\\\n", " ").split())
    assert (
        "demo/run_demo.py --launch 0 --output_dir outputs/compare --train_file my.csv --test_file my_test.csv "
        "--text_column_name review --label_column_name stars --model_name_or_path bert-base-cased "
        '--flags "--num_train_epochs 2"'
    ) in words


def test_make_compare_without_train_says_what_it_needs():
    result = subprocess.run(["make", "-o", ".venv/.setup-done", "compare"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "error: make compare needs TRAIN=<training file" in result.stderr
