"""The Space in a real browser: headless Chromium, driven by Playwright, compares a sentence across the models and
shows the leaderboard's chart for 8 models.

The screenshots land in test-artifacts/space-compare.png and space-leaderboard.png. Chromium comes from the system
(`make setup` installs Debian's chromium where it is missing): Playwright's own browser download needs a network
this project lacks.
"""

import dataclasses
import os
import re
import shutil

from playwright.sync_api import expect, sync_playwright

from conftest import ROOT, free_port, load_module
from shared.inference import ModelSpec, load_predictor

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = os.path.join(ROOT, "test-artifacts")
# A sandboxed root-less browser with no background traffic to hosts this machine cannot reach.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def test_a_visitor_compares_a_sentence_and_sees_every_models_label(served):
    assert CHROMIUM, "no Chromium found: run `make setup` (installs Debian's chromium) or set CHROMIUM_PATH"
    client, specs = served
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(client.src, wait_until="networkidle")

        page.get_by_label("Text").fill("the movie was great fun and charming")
        page.get_by_role("button", name="Compare").click()

        expect(page.locator("#agreement")).to_contain_text("model", timeout=30_000)
        for i in range(3):  # each working model shows its predicted label above its confidence bars
            predicted = page.locator(f"#label-{i} [data-testid=label-output-value]")
            expect(predicted).to_have_text(re.compile(r"^(negative|positive)$"), timeout=30_000)
            expect(page.locator(f"#label-{i} meter")).to_have_count(2)
        expect(page.locator("#latency-0")).to_contain_text("ms")
        expect(page.locator("#latency-3")).to_contain_text("could not answer")  # the broken one says why
        page.screenshot(path=os.path.join(ARTIFACTS, "space-compare.png"), full_page=True)
        browser.close()


def test_the_leaderboard_charts_8_models_legibly(trained):
    assert CHROMIUM, "no Chromium found: run `make setup` (installs Debian's chromium) or set CHROMIUM_PATH"
    app = load_module("space/app.py")
    full = load_predictor(ModelSpec(trained["full"]))
    scores = {"full_finetune": (0.96, 33.7), "freeze_layers": (0.946, 17.6), "setfit_fewshot": (0.914, 43.2),
              "mlm_then_classify": (0.955, 103.0)}  # fmt: skip
    classifiers = [  # two models of each method that score and train alike: the crowded case
        dataclasses.replace(
            full,
            name=f"you/minilm-{method}-{seed}",
            info={**full.info, "method": method, "metrics": {"f1": f1 + 0.004 * seed}, "train_runtime_s": s * seed},
        )
        for method, (f1, s) in scores.items()
        for seed in (1, 1.1)
    ]
    demo = app.build_demo(app.Models(classifiers))
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    os.makedirs(ARTIFACTS, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
            page.get_by_role("tab", name="Leaderboard").click()
            chart = page.locator("#leaderboard-plot img")
            expect(chart).to_be_visible(timeout=30_000)
            page.locator("#leaderboard-plot").screenshot(path=os.path.join(ARTIFACTS, "space-leaderboard.png"))
            browser.close()
    finally:
        demo.close()
