"""`make demo` in its reduced mode: the same pipeline with tiny models and a few steps, as CI runs it."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil

from conftest import ROOT, free_port, predict_in_fresh_process, setfit_predict_in_fresh_process

METHODS = ["full_finetune", "freeze_layers", "setfit_fewshot", "mlm_then_classify"]


def test_reduced_demo_writes_the_report_the_chart_and_four_loadable_models_then_serves_them(
    tiny_bert, tiny_sentence_transformer, tmp_path
):
    """The whole demo, Space included, ended with Ctrl-C as a user ends it: that is its end, not an error (it was
    "error: stopped by Ctrl-C", exit status 130, after every method had trained)."""
    out = tmp_path / "demo"
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with open(stdout, "w") as out_file, open(stderr, "w") as err_file:
        demo = subprocess.Popen(
            [sys.executable, "demo/run_demo.py", "--mode", "reduced", "--model_name_or_path", tiny_bert,
             "--setfit_model", tiny_sentence_transformer, "--output_dir", str(out), "--launch", "1"],
            cwd=ROOT, stdout=out_file, stderr=err_file,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_SERVER_PORT": str(free_port())},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 600
            while "Running on local URL" not in stdout.read_text():
                assert time.monotonic() < deadline and demo.poll() is None, stderr.read_text()[-3000:]
                time.sleep(0.5)
            for process in [psutil.Process(demo.pid), *psutil.Process(demo.pid).children(recursive=True)]:
                process.send_signal(signal.SIGINT)  # as a terminal sends Ctrl-C to the whole foreground job
            demo.wait(timeout=60)
        finally:
            if demo.poll() is None:
                demo.kill()
    assert demo.returncode == 0, stderr.read_text()[-3000:]
    assert "error:" not in stderr.read_text() and "Space stopped." in stdout.read_text()

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
