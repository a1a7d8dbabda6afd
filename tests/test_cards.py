"""Every method's model card as the Hub reads it: metadata validated by huggingface_hub against the test Hub's
/api/validate-yaml, read back with ModelCard.load and checked key by key."""

import csv
import os

import pytest
from huggingface_hub import HfApi, ModelCard

from conftest import TOKEN, USER, load_trainer, model_args_for
from shared.args import DataArguments, ModelArguments, parse_cli

full_finetune = load_trainer("full_finetune")
freeze_layers = load_trainer("freeze_layers")
setfit_fewshot = load_trainer("setfit_fewshot")
mlm_then_classify = load_trainer("mlm_then_classify")

# How tests/tiny.py's reviews are laid out as a Hub dataset with a configuration of its own.
DATASET_README = """---
configs:
- config_name: stars
  data_files:
  - {split: train, path: stars/train.csv}
  - {split: validation, path: stars/validation.csv}
  - {split: test, path: stars/test.csv}
---
# Tiny reviews
"""


def validated_card(path_or_repo_id: str) -> ModelCard:
    """The card in a folder or a repo of the test Hub, once the Hub has validated its metadata."""
    card = ModelCard.load(path_or_repo_id)
    card.validate()  # raises ValueError with the Hub's message when the metadata is refused
    return card


def first_text_of_each_label(csv_path: str) -> list[str]:
    """The evaluation split's first review of each label, in label order (the names sorted, as shared.data has it)."""
    first = {}
    for row in csv.DictReader(open(csv_path)):
        first.setdefault(row["sentiment"], row["review"])
    return [first[label] for label in sorted(first)]


def test_license_and_language_are_flags_of_every_script():
    model_args, *_ = parse_cli(full_finetune.ARGUMENTS, "", ["--license", "apache-2.0", "--language", "en", "fr"])
    assert model_args.license == "apache-2.0" and model_args.language == ["en", "fr"]
    setfit_model_args, *_ = parse_cli(setfit_fewshot.ARGUMENTS, "", ["--language", "en"])
    assert setfit_model_args.license is None and setfit_model_args.language == ["en"]


def test_the_flags_and_the_eval_split_make_the_metadata(hub, tiny_bert, data_args, training_args, reviews):
    model_args = ModelArguments(tiny_bert, license="apache-2.0", language=["en", "fr"])
    full_finetune.main(model_args, data_args, training_args)

    card = validated_card(os.path.join(training_args.output_dir, "README.md"))
    metadata = card.data.to_dict()
    assert metadata["license"] == "apache-2.0" and metadata["language"] == ["en", "fr"]
    assert metadata["pipeline_tag"] == "text-classification" and metadata["library_name"] == "transformers"
    assert [example["text"] for example in metadata["widget"]] == first_text_of_each_label(reviews["test"])
    assert "base_model" not in metadata and "`bert` fine-tuned" in card.text  # a local base: named in the text only
    assert "datasets" not in metadata  # local files
    assert {(r.dataset_config, r.dataset_revision) for r in card.data.eval_results} == {(None, None)}


def test_what_was_not_given_is_left_out(hub, tiny_bert, data_args, training_args, reviews):
    freeze_layers.main(model_args_for(tiny_bert), data_args, freeze_layers.FreezeArguments(1), training_args)

    metadata = validated_card(os.path.join(training_args.output_dir, "README.md")).data.to_dict()
    assert "license" not in metadata and "language" not in metadata and "base_model" not in metadata
    assert metadata["pipeline_tag"] == "text-classification"
    assert [example["text"] for example in metadata["widget"]] == first_text_of_each_label(reviews["test"])


@pytest.mark.parametrize("method", ["full_finetune", "mlm_then_classify"])
def test_a_hub_base_and_a_hub_dataset_at_a_revision_are_in_the_metadata(
    method, hub, tiny_bert, reviews, training_args
):
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(f"{USER}/tiny-bert")
    api.upload_folder(repo_id=f"{USER}/tiny-bert", folder_path=tiny_bert)
    revision = publish_reviews(api, f"{USER}/reviews", reviews)
    api.upload_file(path_or_fileobj=b"a later commit", path_in_repo="NOTES.md", repo_id=f"{USER}/reviews",
                    repo_type="dataset")  # fmt: skip
    data_args = DataArguments(
        dataset_name=f"{USER}/reviews", dataset_config_name="stars", dataset_revision=revision,
        text_column_name="review", label_column_name="sentiment", max_seq_length=32,
    )  # fmt: skip

    trainer = load_trainer(method)
    own = [mlm_then_classify.MLMArguments()] if method == "mlm_then_classify" else []
    trainer.main(ModelArguments(f"{USER}/tiny-bert"), data_args, *own, training_args)

    card = validated_card(os.path.join(training_args.output_dir, "README.md"))
    # Not published, the MLM classifier's adapted encoder has no repo: its base is the original one.
    assert card.data.base_model == f"{USER}/tiny-bert"
    assert card.data.datasets == [f"{USER}/reviews"]
    assert {(r.dataset_name, r.dataset_config, r.dataset_revision) for r in card.data.eval_results} == {
        (f"{USER}/reviews", "stars", revision)
    }
    downloads = [path for verb, path in hub.state.requests if verb == "GET" and "/datasets/" in path]
    assert f"/datasets/{USER}/reviews/resolve/{revision}/stars/train.csv" in downloads
    assert not [path for path in downloads if "/resolve/main/" in path]


def publish_reviews(api: HfApi, repo_id: str, reviews: dict[str, str]) -> str:
    """The tiny reviews as a Hub dataset whose configuration `stars` holds them; returns the commit id."""
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=DATASET_README.encode(), path_in_repo="README.md", repo_id=repo_id,
                    repo_type="dataset")  # fmt: skip
    for split, path in reviews.items():
        commit = api.upload_file(path_or_fileobj=path, path_in_repo=f"stars/{split}.csv", repo_id=repo_id,
                                 repo_type="dataset")  # fmt: skip
    return commit.oid


def test_the_mlm_classifier_names_its_published_encoder_as_its_base(hub, tiny_bert, data_args, training_args):
    training_args.push_to_hub, training_args.hub_model_id = True, f"{USER}/adapted"
    model_args = ModelArguments(tiny_bert, license="mit", language=["en"])

    mlm_then_classify.main(model_args, data_args, mlm_then_classify.MLMArguments(), training_args)

    classifier = validated_card(f"{USER}/adapted").data  # read back from the Hub
    assert classifier.base_model == f"{USER}/adapted-mlm"
    assert classifier.pipeline_tag == "text-classification" and classifier.widget
    assert classifier.license == "mit" and classifier.language == ["en"]
    encoder = validated_card(f"{USER}/adapted-mlm").data
    assert encoder.pipeline_tag == "fill-mask" and encoder.base_model is None  # adapted from a local folder
    assert encoder.license == "mit" and encoder.language == ["en"]


def test_a_setfit_card_keeps_setfits_own_sections(hub, tiny_sentence_transformer, data_args, reviews, tmp_path):
    data_args.samples_per_label = 8
    training = setfit_fewshot.SetFitTrainingArguments(output_dir=str(tmp_path / "setfit"), max_steps=2)
    model_args = ModelArguments(tiny_sentence_transformer, language=["en"])
    setfit_fewshot.main(model_args, data_args, setfit_fewshot.SetFitArguments(num_iterations=2), training)

    card = validated_card(os.path.join(training.output_dir, "README.md"))
    metadata = card.data.to_dict()
    assert metadata["library_name"] == "setfit" and metadata["pipeline_tag"] == "text-classification"
    assert metadata["language"] == ["en"] and "license" not in metadata and "base_model" not in metadata
    assert [example["text"] for example in metadata["widget"]] == first_text_of_each_label(reviews["test"])
    # setfit's sections, as its card template renders them, inside ours
    assert "## Model Labels" in card.text and "| Label    | Examples" in card.text
    assert "## Training Set Metrics" in card.text and "| Training set | Min | Median | Max |" in card.text
    assert "| negative | 8                     |" in card.text  # examples per label: the 8-shot sample
    assert "## Training cost" in card.text  # and ours go on after them
