"""`make demo` in its reduced mode: the same pipeline with tiny models and a few steps, as CI runs it."""

import json
import sys

from conftest import predict_in_fresh_process, run_script, setfit_predict_in_fresh_process

METHODS = ["full_finetune", "freeze_layers", "setfit_fewshot", "mlm_then_classify"]


def test_reduced_demo_writes_the_report_the_chart_and_four_loadable_models(
    tiny_bert, tiny_sentence_transformer, tmp_path
):
    out = tmp_path / "demo"
    result = run_script(
        [sys.executable, "demo/run_demo.py", "--mode", "reduced", "--model_name_or_path", tiny_bert,
         "--setfit_model", tiny_sentence_transformer, "--output_dir", str(out), "--launch", "0"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    report = (out / "report.md").read_text()
    for method in METHODS:
        assert f"| {method} |" in report
        results = json.loads((out / method / "results.json").read_text())
        assert results["method"] == method
        assert f"| {results['metrics']['accuracy']:.3f} | {results['metrics']['f1']:.3f} |" in report
    assert "TF-IDF + logistic regression (whole training split)" in report
    assert "TF-IDF + logistic regression (16 per label, SetFit's sample)" in report
    verdicts = [line for line in report.splitlines() if " tfidf_logreg" in line and " on F1: " in line]
    assert len(verdicts) == 4  # one verdict per method, whichever way it went
    assert "| 32 |" in report  # SetFit and its baseline both saw 16 examples of each label
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    for method in ["full_finetune", "freeze_layers", "mlm_then_classify"]:
        [prediction] = predict_in_fresh_process(str(out / method), ["A warm and funny film."])
        assert prediction["label"] in {"negative", "positive"}
    assert setfit_predict_in_fresh_process(str(out / "setfit_fewshot"), ["Dull."])[0] in {"negative", "positive"}
