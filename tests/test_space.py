"""space/app.py through its API, as gradio_client sees it, with tiny models trained by three of the methods."""

import contextlib
import csv
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
import types

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from huggingface_hub import HfApi

from conftest import ROOT, TOKEN, USER, free_port, load_module
from shared.inference import ModelSpec
from space_harness import wait_for_client
from tiny import damaged_copy

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
    base, adapted = client.predict("mlm", "the movie was [MASK]", api_name="/fill_mask")  # by its folder name
    assert len(base["data"]) == 5 and len(adapted["data"]) == 5
    assert all(row[0] for row in base["data"] + adapted["data"])  # every candidate is a token
    assert base["data"] != adapted["data"]  # the adapted encoder answers differently from its base


def test_a_local_base_encoder_not_named_in_encoder_ids_is_reported_not_guessed(trained):
    models = app.load_models([ModelSpec(trained["mlm"])])
    base, adapted = models.fill_mask["mlm"]
    assert "ENCODER_IDS" in base.error and "bert" in base.error  # results.json names it by its folder name only
    assert adapted.folder == os.path.join(trained["mlm"], "mlm")  # the adapted encoder beside the model


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
    log = tmp_path / "app.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, **env}, stdout=output,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        client = wait_for_client(f"http://127.0.0.1:{port}/", process, str(log))
        answers = client.predict("great fun film", api_name="/compare")
        assert [a["model"] for a in answers] == [f"{USER}/full", f"{USER}/setfit"]
        assert all(a["label"] in {"negative", "positive"} for a in answers)
    finally:
        process.kill()
    # Only files that cannot run code were fetched: the pickled SetFit head stayed on the server.
    fetched = [path for method, path in hub.state.requests if method == "GET" and "/resolve/" in path]
    assert any(path.endswith("/model_head.safetensors") for path in fetched)
    assert not any(path.endswith("/model_head.pkl") for path in fetched)


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


def test_models_are_named_by_repo_id_or_folder_name_never_by_a_path(served):
    client, _ = served
    answers = client.predict("great fun film", api_name="/compare")
    assert [a["model"] for a in answers] == ["full", "setfit", "mlm", os.path.basename(served[1][3].source)]
    rows = client.predict(api_name="/leaderboard")
    assert [row["base model"] for row in rows] == ["bert", "tiny-st", "bert", "?"]  # trained from local folders
    # A branch or tag says which version is served; the commit sha a deployed Space pins each model to is noise.
    assert ModelSpec("org/a", "v2").name == "org/a@v2" and ModelSpec("org/a", "0" * 40).name == "org/a"


def test_the_leaderboard_chart_names_8_models_in_labels_that_do_not_overlap():
    methods = ["full_finetune", "freeze_layers", "setfit_fewshot", "mlm_then_classify"]
    rows = [  # two models of each method, scoring and training alike, as in the README's table
        {"model": f"you/minilm-{method}-{seed}", "method": method, "F1": f1, "training time (s)": seconds}
        for (method, f1, seconds), seed in itertools.product(
            zip(methods, [0.96, 0.946, 0.914, 0.955], [33.7, 17.6, 43.2, 103.0], strict=True), (1, 2)
        )
    ]
    for i, row in enumerate(rows):
        row["F1"] += 0.002 * i
        row["training time (s)"] *= 1 + 0.03 * i
    figure = app.leaderboard_plot(rows)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    labels = [(text.get_text(), text.get_window_extent(renderer)) for text in drawn_texts(figure)]

    assert all(row["model"] in " ".join(text for text, _ in labels) for row in rows)
    assert [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(labels, 2) if box_a.overlaps(box_b)] == []
    page = figure.bbox
    assert [text for text, box in labels if not (page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0)] == []


def drawn_texts(figure) -> list:
    """Every text a reader sees on the figure: titles, axis and tick labels in view, annotations, legends."""
    texts = [text for legend in figure.legends for text in legend.get_texts()]
    for axes in figure.axes:
        texts += [axes.title, axes.xaxis.label, axes.yaxis.label, *axes.texts]
        for axis in (axes.xaxis, axes.yaxis):
            low, high = sorted(axis.get_view_interval())
            ticks = axis.get_major_ticks() + axis.get_minor_ticks()
            texts += [tick.label1 for tick in ticks if low <= tick.get_loc() <= high]
    return [text for text in texts if text.get_visible() and text.get_text().strip()]


@contextlib.contextmanager
def running(module, models):
    """The app of `module` serving `models` on 127.0.0.1, and a client of it."""
    demo = module.build_demo(models)
    port = free_port()
    module.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()


class ModelCalls:
    """Counts the model calls running at once; each call is slowed down so that the calls of requests served at
    the same time overlap."""

    def __init__(self, seconds: float):
        self.seconds, self.running, self.most = seconds, 0, 0
        self.lock = threading.Lock()

    def wrap(self, call):
        def counted(*args):
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                time.sleep(self.seconds)
                return call(*args)
            finally:
                with self.lock:
                    self.running -= 1

        return counted


def test_compare_batch_and_fill_mask_share_one_limit_of_two_model_calls(trained, tiny_bert, tmp_path):
    specs = [ModelSpec(trained[name]) for name in ("full", "setfit", "mlm")]
    models = app.load_models(specs, [ModelSpec(tiny_bert)])  # the MLM model's local base, as ENCODER_IDS names it
    calls = ModelCalls(seconds=0.2)
    for model in models.classifiers:
        model._probabilities = calls.wrap(model._probabilities)
    for base, adapted in models.fill_mask.values():
        base._fill, adapted._fill = calls.wrap(base._fill), calls.wrap(adapted._fill)
    batch = write_csv(tmp_path / "batch.csv", [{"text": "great fun film"}, {"text": "dull boring plot"}])

    with running(app, models) as client:
        jobs = [client.submit("great fun film", api_name="/compare") for _ in range(3)]
        jobs += [client.submit(handle_file(batch), api_name="/batch") for _ in range(3)]
        jobs += [client.submit("mlm", "the movie was [MASK]", api_name="/fill_mask") for _ in range(3)]
        for job in jobs:
            job.result(timeout=120)

    assert calls.most == 2  # requests ran side by side, but never more than two of them at once


def paying_once_for_set_up(load, seconds: float):
    """`load`, with models whose first call takes `seconds` longer: real models pay that once for lazy set-up
    (CUDA context, kernels, allocator pools), which tiny models on a CPU hardly show."""

    def loader(spec):
        model = load(spec)
        probabilities, paid = model._probabilities, []

        def first_call_pays(texts):
            if not paid:
                paid.append(time.sleep(seconds))
            return probabilities(texts)

        model._probabilities = first_call_pays
        return model

    return loader


def test_the_first_compare_is_no_slower_than_the_p95_of_the_following(trained, monkeypatch):
    monkeypatch.setattr(app, "load_predictor", paying_once_for_set_up(app.load_predictor, seconds=0.5))
    # By chance alone, 1 call in 41 may exceed the p95 of the others, more often on a machine that other jobs load
    # (a full clean-clone run once saw 0.148 s against 0.140 s twice): a fresh app tries again, up to three times.
    for _ in range(3):
        models = app.load_models([ModelSpec(trained[name]) for name in ("full", "setfit", "mlm")])
        times = []
        with running(app, models) as client:
            # The client's own first request (connection, queue) is not the app's cold start: a call that runs no
            # model takes it, so that the first compare measures only what the models make it pay.
            client.predict(api_name="/leaderboard")
            for _ in range(41):
                start = time.perf_counter()
                client.predict("great fun film", api_name="/compare")
                times.append(time.perf_counter() - start)
        first, p95 = times[0], float(np.percentile(times[1:], 95))
        if first <= p95:
            return
    pytest.fail(f"the first compare took {first:.3f} s, the p95 of the following ones {p95:.3f} s")


def zero_gpu_spaces(calls: list) -> types.ModuleType:
    """A stand-in for the `spaces` package on ZeroGPU hardware: spaces.GPU runs the function here, and records the
    GPU time each call asks for and the arguments it hands over."""

    def gpu(duration):
        def decorate(function):
            def on_gpu(*args):
                calls.append({"function": function.__name__, "seconds": duration(*args), "args": args})
                return function(*args)

            return on_gpu

        return decorate

    config = types.SimpleNamespace(Config=types.SimpleNamespace(zero_gpu=True))
    return types.SimpleNamespace(GPU=gpu, config=config)


def test_on_zero_gpu_each_call_asks_for_the_gpu_time_its_work_needs(trained, tiny_bert, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "spaces", zero_gpu_spaces(calls))
    zero_gpu_app = load_module("space/app.py")
    specs = [ModelSpec(trained[name]) for name in ("full", "setfit", "mlm")]
    models = zero_gpu_app.load_models(specs, [ModelSpec(tiny_bert)])
    texts = [f"review {i}: great fun film" for i in range(app.MAX_BATCH_ROWS)]
    batch = write_csv(tmp_path / "batch.csv", [{"text": text} for text in texts])

    with running(zero_gpu_app, models) as client:
        client.predict("great fun film", api_name="/compare")
        client.predict(handle_file(batch), api_name="/batch")
        client.predict("mlm", "the movie was [MASK]", api_name="/fill_mask")

    compare, predict_batch, fill_mask = calls
    assert compare["args"] == ("great fun film",) and compare["seconds"] < 60
    # A full batch over three models needs more than ZeroGPU's default 60 s; the CSV is read before the GPU is
    # taken, and only the texts go to it.
    assert predict_batch["args"] == (texts,) and predict_batch["seconds"] > 60
    assert fill_mask["args"] == ("mlm", "the movie was [MASK]") and fill_mask["seconds"] < 60


def test_spaces_is_imported_before_torch(tmp_path):
    """ZeroGPU refuses to start once CUDA is initialised: `spaces` must come before anything that loads torch. Like
    the real package, the stand-in refuses to be imported by gradio itself (gradio tries, to detect ZeroGPU)."""
    stub = tmp_path / "stub" / "spaces"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(
        "import sys, types\n"
        "if 'gradio' in sys.modules and not hasattr(sys.modules['gradio'], 'Blocks'):\n"
        "    raise ImportError('gradio imports spaces only once it is complete')\n"
        "if 'torch' in sys.modules:\n"
        "    raise RuntimeError('torch was imported before spaces')\n"
        "GPU = lambda duration: (lambda function: function)\n"
        "config = types.SimpleNamespace(Config=types.SimpleNamespace(zero_gpu=False))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stub.parent), ROOT])}
    command = [sys.executable, "-c", "import app; print(app.spaces.__file__)"]
    result = subprocess.run(command, cwd=os.path.join(ROOT, "space"), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(stub / "__init__.py")


def test_models_that_cannot_load_do_not_keep_the_app_from_starting(trained, tmp_path):
    truncated = damaged_copy(trained["full"], tmp_path / "truncated", "truncated weights")
    relabeled = damaged_copy(trained["full"], tmp_path / "relabeled", "labels that the head does not have")
    head = damaged_copy(trained["setfit"], tmp_path / "head", "truncated SetFit head")

    models = app.load_models([ModelSpec(truncated), ModelSpec(relabeled), ModelSpec(head), ModelSpec(trained["full"])])

    assert [type(model).__name__ for model in models.classifiers] == ["BrokenModel"] * 3 + ["Predictor"]
    assert "damaged" in models.classifiers[0].error and "other shapes" in models.classifiers[1].error
    answers = app.compare(models.classifiers, "great fun film")
    assert [("label" in answer) for answer in answers] == [False, False, False, True]


def test_two_folders_of_one_name_are_told_apart_and_a_repeated_model_is_served_once(trained, tmp_path):
    shutil.copytree(trained["full"], tmp_path / "a" / "model")
    shutil.copytree(trained["setfit"], tmp_path / "b" / "model")
    texts = ["great fun film", "boring and dull plot", "it was awful"]
    specs = app.read_model_specs(f"{tmp_path}/a/model,{tmp_path}/b/model,{tmp_path}/a/model")

    models = app.load_models(specs)
    predicted = app.batch_predictions(models.classifiers, texts)

    assert [model.name for model in models.classifiers] == ["model", "model (2)"]
    assert predicted["model"] == [p.label for p in models.classifiers[0].predict(texts)]
    assert predicted["model (2)"] == [p.label for p in models.classifiers[1].predict(texts)]


def test_a_local_folder_whose_path_holds_an_at_sign_is_that_folder(trained, tmp_path):
    folder = shutil.copytree(trained["full"], tmp_path / "run@lr2e-5")
    [spec] = app.read_model_specs(str(folder))
    assert (spec.source, spec.revision) == (str(folder), None)
    assert app.read_model_specs("org/model@v2")[0] == ModelSpec("org/model", "v2")


def test_in_a_batch_a_model_that_fails_reports_its_error_and_the_others_answer(trained, tmp_path):
    from shared.inference import load_predictor

    good, failing = load_predictor(ModelSpec(trained["full"])), load_predictor(ModelSpec(trained["full"]))
    failing.name = "failing"

    def too_long(texts):
        raise RuntimeError("The size of tensor a (1502) must match the size of tensor b (512)")

    failing._probabilities = too_long
    rows = [{"text": "great fun film", "label": "positive"}, {"text": "it was awful", "label": "negative"}]
    texts, labels = app.read_batch(write_csv(tmp_path / "batch.csv", rows))
    predictions, _download, scores, _plot = app.evaluate_batch(
        [failing, good], texts, labels, app.batch_predictions([failing, good], texts)
    )

    assert list(predictions.columns) == ["text", "label", good.name]
    assert scores.loc[0, "model"] == "failing" and "size of tensor a (1502)" in scores.loc[0, "error"]
    assert scores.loc[1, "model"] == good.name and 0 <= scores.loc[1, "accuracy"] <= 1


def test_a_batch_file_saved_by_a_spreadsheet_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\r\ngreat fun film,positive\r\n".encode("utf-8-sig"))
    assert app.read_batch(str(path)) == (["great fun film"], ["positive"])


def test_a_batch_row_without_its_label_is_reported_not_scored_as_a_miss(tmp_path):
    rows = [{"text": "great fun film", "label": "positive"}, {"text": "it was awful", "label": ""}]
    with pytest.raises(app.gr.Error, match=r"Empty label on line\(s\) 3"):
        app.read_batch(write_csv(tmp_path / "batch.csv", rows))


def test_fill_mask_says_that_a_sentence_is_longer_than_the_encoders_take(served):
    client, _ = served
    with pytest.raises(Exception, match=r"the sentence is \d+ tokens long; bert takes at most 64"):
        client.predict("mlm", "the movie " * 40 + "was [MASK]", api_name="/fill_mask")
