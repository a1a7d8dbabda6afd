"""space/app.py through its API, as gradio_client sees it, with tiny models trained by three of the methods."""

import csv
import os
import sys
import time

import httpx
import pytest
import yaml
from gradio_client import Client, handle_file
from huggingface_hub import HfApi

from conftest import ROOT, TOKEN, USER, free_port, load_module, run_script
from shared.inference import ModelSpec

app = load_module("space/app.py")


def write_csv(path, rows: list[dict]) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def test_compare_answers_for_every_model_and_isolates_the_broken_one(served):
    client, specs = served
    answers = client.predict("the movie was great fun and charming", api_name="/compare")

    assert [a["model"] for a in answers] == [spec.name for spec in specs]
    good, broken = answers[:3], answers[3]
    for answer in good:
        assert answer["label"] in {"negative", "positive"}
        assert set(answer["scores"]) == {"negative", "positive"}
        assert sum(answer["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert answer["label"] == max(answer["scores"], key=answer["scores"].get)
        assert answer["latency_ms"] > 0
    assert "error" in broken and "label" not in broken


def test_batch_with_labels_reports_metrics_that_match_the_predictions(served, tmp_path):
    client, specs = served
    rows = [
        {"text": "great fun film", "label": "positive"},
        {"text": "boring and dull plot", "label": "negative"},
        {"text": "superb charming cast", "label": "positive"},
        {"text": "tedious weak story", "label": "negative"},
        {"text": "it was awful", "label": "negative"},
    ]
    predictions, download, scores, _plot = client.predict(
        handle_file(write_csv(tmp_path / "batch.csv", rows)), api_name="/batch"
    )

    table = {h: [r[i] for r in predictions["data"]] for i, h in enumerate(predictions["headers"])}
    assert table["text"] == [r["text"] for r in rows]
    by_model = {row[0]: row for row in scores["data"]}
    for spec in specs[:3]:
        predicted = table[spec.name]
        correct = sum(p == r["label"] for p, r in zip(predicted, rows, strict=True))
        tp = sum(p == r["label"] == "positive" for p, r in zip(predicted, rows, strict=True))
        positives_predicted, positives = predicted.count("positive"), 2
        f1 = 2 * tp / (positives_predicted + positives) if positives_predicted + positives else 0.0
        accuracy_col, f1_col = scores["headers"].index("accuracy"), scores["headers"].index("F1")
        assert by_model[spec.name][accuracy_col] == pytest.approx(correct / 5, abs=1e-4)
        assert by_model[spec.name][f1_col] == pytest.approx(f1, abs=1e-4)
    with open(download) as f:
        assert len(list(csv.DictReader(f))) == 5


def test_leaderboard_rows_come_from_results(served, trained):
    client, _ = served
    rows = client.predict(api_name="/leaderboard")

    methods = [row["method"] for row in rows]
    assert methods == ["full_finetune", "setfit_fewshot", "mlm_then_classify", "?"]
    full = rows[0]
    assert full["training examples"] == 48 and full["trainable params"] > 0
    assert 0 <= full["accuracy"] <= 1 and full["training time (s)"] >= 0


def test_limits_are_enforced_over_the_api(served, tmp_path):
    client, _ = served
    with pytest.raises(Exception, match=f"limit is {app.MAX_TEXT_CHARS}"):
        client.predict("x" * (app.MAX_TEXT_CHARS + 1), api_name="/compare")
    with pytest.raises(Exception, match="Type a text"):
        client.predict("   ", api_name="/compare")
    too_many = [{"text": f"review {i}"} for i in range(app.MAX_BATCH_ROWS + 1)]
    with pytest.raises(Exception, match=f"limit is {app.MAX_BATCH_ROWS}"):
        client.predict(handle_file(write_csv(tmp_path / "big.csv", too_many)), api_name="/batch")
    huge = tmp_path / "huge.csv"
    huge.write_text("text\n" + ("a long review " * 100 + "\n") * 1000)  # about 1.4 MB, over the 1 MB limit
    with pytest.raises(Exception, match="exceeds the maximum file size of 1048576 bytes"):
        client.predict(handle_file(str(huge)), api_name="/batch")
    # The server refuses it too, for a client that does not check first.
    with open(huge, "rb") as f:
        response = httpx.post(f"{client.src}gradio_api/upload", files={"files": ("huge.csv", f, "text/csv")})
    assert response.status_code == 413


def test_fill_mask_compares_base_and_adapted_encoders(served, trained):
    client, _ = served
    base, adapted = client.predict(trained["mlm"], "the movie was [MASK]", api_name="/fill_mask")
    assert len(base["data"]) == 5 and len(adapted["data"]) == 5
    assert all(row[0] for row in base["data"] + adapted["data"])  # every candidate is a token
    assert base["data"] != adapted["data"]  # the adapted encoder answers differently from its base


def test_models_yaml_and_model_ids_with_revisions(tmp_path):
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - id: org/a\n    revision: v2\n  - id: org/b\n    trust_pickle: true\n  - ./local\n")
    assert app.read_model_specs(None, str(models)) == [
        ModelSpec("org/a", "v2"),
        ModelSpec("org/b", None, True),
        ModelSpec("./local"),
    ]
    assert app.read_model_specs("org/a@main, ./x") == [ModelSpec("org/a", "main"), ModelSpec("./x")]


def test_app_pulls_models_by_repo_id_from_the_hub(hub, trained, tmp_path):
    api = HfApi(endpoint=hub.url, token=TOKEN)
    for name in ("full", "setfit"):
        api.create_repo(f"{USER}/{name}")
        api.upload_folder(repo_id=f"{USER}/{name}", folder_path=trained[name])
    port = free_port()
    script = (
        "import os, threading, time, sys\n"
        f"sys.argv = ['app.py']\n"
        "import runpy\n"
        "threading.Timer(90, lambda: os._exit(3)).start()\n"  # never outlive the test
        f"runpy.run_path({os.path.join(ROOT, 'space', 'app.py')!r}, run_name='__main__')\n"
    )
    env = {**hub.env, "MODEL_IDS": f"{USER}/full,{USER}/setfit", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HOME": str(tmp_path / "space_cache")}  # fmt: skip
    process = run_script([sys.executable, "-c", script], env=env, background=True)
    try:
        client = wait_for_client(f"http://127.0.0.1:{port}/", process)
        answers = client.predict("great fun film", api_name="/compare")
        assert [a["model"] for a in answers] == [f"{USER}/full", f"{USER}/setfit"]
        assert all(a["label"] in {"negative", "positive"} for a in answers)
    finally:
        process.kill()
    # Only files that cannot run code were fetched: the pickled SetFit head stayed on the server.
    fetched = [path for method, path in hub.state.requests if method == "GET" and "/resolve/" in path]
    assert any(path.endswith("/model_head.safetensors") for path in fetched)
    assert not any(path.endswith("/model_head.pkl") for path in fetched)


def wait_for_client(url: str, process, timeout_s: float = 80) -> Client:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            process.log.seek(0)
            raise AssertionError(f"the app exited: {process.log.read()[-3000:]}")
        try:
            return Client(url, verbose=False)
        except Exception:
            time.sleep(1)
    raise AssertionError("the app did not start in time")


def test_deploy_uploads_a_gradio_space_with_the_app_and_shared(hub, tmp_path):
    result = run_script(
        [sys.executable, "space/deploy.py", "--space_id", f"{USER}/compare", "--models", f"{USER}/full,{USER}/fit@v2"],
        env=hub.env,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    space = hub.state.repo(f"{USER}/compare", "space")
    assert space.sdk == "gradio" and len(space.commits) == 1
    files = space.commits[0].files
    assert {"app.py", "requirements.txt", "README.md", "models.yaml", "shared/inference.py"} <= set(files)
    assert not [path for path in files if "__pycache__" in path]
    card = files["README.md"].decode()
    assert "sdk: gradio" in card and "app_file: app.py" in card and f"- {USER}/fit" in card
    models = yaml.safe_load(files["models.yaml"])["models"]
    assert models == [{"id": f"{USER}/full"}, {"id": f"{USER}/fit", "revision": "v2"}]
    assert TOKEN not in result.stdout + result.stderr


def test_deploy_refuses_local_folders(hub, trained):
    result = run_script([sys.executable, "space/deploy.py", "--space_id", f"{USER}/x", "--models", trained["full"]],
                        env=hub.env)  # fmt: skip
    assert result.returncode == 2 and "a Space cannot read folders on this machine" in result.stderr
    assert hub.state.repo(f"{USER}/x", "space") is None


def test_a_model_that_fails_to_predict_reports_its_error_and_the_others_answer(trained):
    from shared.inference import load_predictor

    good = load_predictor(ModelSpec(trained["full"]))
    failing = load_predictor(ModelSpec(trained["full"]))
    failing.name = "failing"

    def out_of_memory(texts):
        raise RuntimeError("CUDA out of memory <b>here</b>")

    failing._probabilities = out_of_memory
    answers = app.compare([failing, good], "great fun film")

    assert answers[0] == {"model": "failing", "error": "RuntimeError: CUDA out of memory <b>here</b>"}
    assert answers[1]["label"] in {"negative", "positive"}
    assert app.agreement(answers) == "1 model answered."
