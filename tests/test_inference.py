"""shared.inference: which files it trusts, and that both ways of serving a SetFit head agree."""

import os
import shutil

import pytest

from shared.errors import InputError
from shared.inference import ModelSpec, load_predictor

TEXTS = ["great fun film", "dull boring plot", "a superb charming cast"]


def test_a_setfit_model_with_only_a_pickled_head_needs_trust(trained, tmp_path):
    folder = tmp_path / "pickle-only"
    shutil.copytree(trained["setfit"], folder)
    os.remove(folder / "model_head.safetensors")

    with pytest.raises(InputError, match="only a pickled head; list it as trusted"):
        load_predictor(ModelSpec(str(folder)))
    trusted = load_predictor(ModelSpec(str(folder), trust_pickle=True))
    portable = load_predictor(ModelSpec(trained["setfit"]))

    assert trusted.kind == portable.kind == "setfit" and trusted.labels == portable.labels == ["negative", "positive"]
    for a, b in zip(trusted.predict(TEXTS), portable.predict(TEXTS), strict=True):
        assert a.label == b.label
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


def test_transformers_classifier_scores_sum_to_one_per_text(trained):
    predictor = load_predictor(ModelSpec(trained["full"]))
    predictions = predictor.predict(TEXTS * 20, batch_size=8)  # several batches
    assert predictor.kind == "transformers" and len(predictions) == 60
    assert all(sum(p.scores.values()) == pytest.approx(1.0, abs=1e-5) for p in predictions)
    assert predictor.info["method"] == "full_finetune"


@pytest.mark.parametrize("source", ["not a repo id!", "org//name", "a/b/c"])
def test_bad_sources_are_one_clear_error(source):
    with pytest.raises(InputError, match="neither a local folder nor a valid Hub repo id"):
        load_predictor(ModelSpec(source))


def test_a_folder_without_a_model(tmp_path):
    with pytest.raises(InputError, match="holds no model"):
        load_predictor(ModelSpec(str(tmp_path)))
