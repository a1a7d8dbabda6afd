"""shared.inference: which files it trusts, and that both ways of serving a SetFit head agree."""

import json
import os
import shutil

import pytest
from huggingface_hub import HfApi, constants

from conftest import TOKEN, USER
from shared.errors import InputError
from shared.inference import ModelSpec, load_fill_mask, load_predictor
from tiny import damaged_copy

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


def test_a_fill_mask_encoder_loads_by_repo_id_from_safe_files_into_the_hub_cache(hub, tiny_bert):
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(f"{USER}/bert")
    api.upload_folder(repo_id=f"{USER}/bert", folder_path=tiny_bert)
    api.upload_file(path_or_fileobj=b"not a checkpoint", path_in_repo="pytorch_model.bin", repo_id=f"{USER}/bert")

    encoder = load_fill_mask(ModelSpec(f"{USER}/bert"))
    candidates = encoder.fill("the movie was [MASK]")

    assert encoder.name == f"{USER}/bert" and len(candidates) == 5
    assert all(token and 0 <= score <= 1 for token, score in candidates)
    downloads = [path for method, path in hub.state.requests if method == "GET" and "/resolve/" in path]
    fetched = {path.rsplit("/", 1)[1] for path in downloads}
    assert "model.safetensors" in fetched and "pytorch_model.bin" not in fetched
    assert encoder.folder.startswith(constants.HF_HUB_CACHE)  # the one cache that the classifiers use too


@pytest.mark.parametrize(
    "method, damage, error",
    [
        ("full", "truncated weights", "its safetensors weights are damaged"),
        ("full", "labels that the head does not have", "other shapes than its config.json says"),
        ("full", "no tokenizer files", "it has no tokenizer files"),
        ("setfit", "no tokenizer files", "it has no tokenizer files"),
        ("setfit", "truncated SetFit head", "model_head.safetensors is damaged"),
        ("setfit", "no SetFit head", "is a SetFit model without its head"),
    ],
)
def test_a_damaged_model_folder_is_one_error_that_says_what_is_wrong(trained, tmp_path, method, damage, error):
    folder = damaged_copy(trained[method], tmp_path / "model", damage)
    with pytest.raises(InputError, match=error):
        load_predictor(ModelSpec(folder))


def test_a_tokenizer_saved_without_a_length_limit_is_cut_to_the_models_positions(trained, tmp_path):
    folder = tmp_path / "no-limit"
    shutil.copytree(trained["full"], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("model_max_length", None)  # as many older tokenizers on the Hub were saved
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    long_text = " ".join(["great fun film"] * 100)  # 300 words; the tiny model has 64 positions

    [cut] = load_predictor(ModelSpec(str(folder))).predict([long_text])
    [kept] = load_predictor(ModelSpec(trained["full"])).predict([long_text])

    assert cut.label == kept.label and cut.scores == pytest.approx(kept.scores, abs=1e-6)


def test_a_fill_mask_sentence_longer_than_the_encoder_takes_is_one_error(tiny_bert):
    encoder = load_fill_mask(ModelSpec(tiny_bert))
    with pytest.raises(InputError, match=r"the sentence is \d+ tokens long; bert takes at most 64"):
        encoder.fill("the movie " * 40 + "was [MASK]")
    assert len(encoder.fill("the movie was [MASK]")) == 5
