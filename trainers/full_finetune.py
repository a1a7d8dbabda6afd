r"""Full fine-tuning: train every weight of a pretrained encoder and a new classification head.

    accelerate launch -q --config_file accelerate_config.yaml trainers/full_finetune.py \
        --model_name_or_path bert-base-cased --dataset_name rotten_tomatoes \
        --output_dir outputs/full_finetune [--push_to_hub --hub_model_id you/bert-rotten-tomatoes]
    accelerate launch -q --config_file accelerate_config.yaml trainers/full_finetune.py configs/full_finetune.yaml

The defaults are the recipe of the book's chapter on text classification: bert-base-cased on rotten_tomatoes,
learning rate 2e-5, batch 16, one epoch, weight decay 0.01, with binary F1 reported. Local data works too:
--train_file/--validation_file/--test_file (csv, json, jsonl or parquet) with --text_column_name and
--label_column_name. Batches are padded per batch and grouped by length. The model is evaluated on the test
split (validation when there is none); output_dir receives the model (safetensors), tokenizer, README.md
model card and results.json, and with --push_to_hub the same files are published to the Hub. A .yaml or .json
file as the first argument holds flags (flags after it override it).
"""

from shared.args import DataArguments, ModelArguments, RecipeTrainingArguments, parse_cli
from shared.classification import Method, train_classifier
from shared.data import load_labeled_data
from shared.errors import configure_cli_logging, exit_on_cli_error
from shared.hub import check_model_source
from shared.training import start_run

METHOD = "full_finetune"
SUMMARY = "every weight of the pretrained encoder and of the new classification head is trained."


# What main() takes, in order; the command line parses into these.
ARGUMENTS = [ModelArguments, DataArguments, RecipeTrainingArguments]


def main(model_args: ModelArguments, data_args: DataArguments, training_args: RecipeTrainingArguments) -> dict:
    # Everything that can be wrong with the request fails here, before the model is downloaded.
    splits = load_labeled_data(data_args, training_args.seed)
    check_model_source(model_args.model_name_or_path, model_args.model_revision)
    # Last: the Hub repo is created, then --overwrite_output_dir clears the folder.
    target = start_run(training_args, {"method": METHOD})
    return train_classifier(model_args, data_args, training_args, splits, target, Method(METHOD, SUMMARY))


if __name__ == "__main__":
    configure_cli_logging(METHOD)
    with exit_on_cli_error():
        main(*parse_cli(ARGUMENTS, __doc__, output_dir=f"outputs/{METHOD}"))
