"""Full fine-tuning: train every weight of a pretrained encoder and a new classification head.

    accelerate launch --config_file accelerate_config.yaml trainers/full_finetune.py \
        --model_name_or_path bert-base-cased --dataset_name rotten_tomatoes \
        --output_dir outputs/full_finetune [--push_to_hub --hub_model_id you/bert-rotten-tomatoes]

The defaults are the recipe of the book's chapter on text classification: bert-base-cased on rotten_tomatoes,
learning rate 2e-5, batch 16, one epoch, weight decay 0.01, with binary F1 reported. Local data works too:
--train_file/--validation_file/--test_file (csv, json, jsonl or parquet) with --text_column_name and
--label_column_name. Batches are padded per batch and grouped by length. The model is evaluated on the test
split (validation when there is none); output_dir receives the model (safetensors), tokenizer, README.md
model card and results.json, and with --push_to_hub the same files are published to the Hub.
"""

import logging

from transformers import AutoTokenizer, TrainingArguments, set_seed

from shared.args import DataArguments, ModelArguments, hub_args_from, parse_cli
from shared.classification import (
    BOOK_RECIPE,
    classifier_trainer,
    evaluate_classifier,
    hyperparameters,
    load_classifier,
    tokenize_splits,
)
from shared.data import dataset_source, eval_split_name, label_names, load_labeled_data
from shared.errors import exit_on_cli_error
from shared.hub import load_pretrained, preflight
from shared.publish import publish
from shared.results import build_results, count_parameters

METHOD = "full_finetune"
SUMMARY = "every weight of the pretrained encoder and of the new classification head is trained."


def main(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> dict:
    # Everything that can be wrong with the request fails here, before the model is downloaded.
    target = preflight(hub_args_from(training_args), training_args.output_dir)
    splits = load_labeled_data(data_args, training_args.seed)
    names = label_names(splits)
    tokenizer = load_pretrained(AutoTokenizer, model_args.model_name_or_path, model_args.model_revision)
    with training_args.main_process_first(desc="tokenizing"):
        tokenized = tokenize_splits(splits, tokenizer, data_args.max_seq_length)

    # Seed before building the model, so the new head starts from the same weights on every run.
    set_seed(training_args.seed)
    model = load_classifier(model_args.model_name_or_path, model_args.model_revision, names)
    trainable_params, total_params = count_parameters(model)

    trainer = classifier_trainer(model, tokenizer, tokenized, training_args)
    train_output = trainer.train()
    eval_split = eval_split_name(splits)
    metrics = evaluate_classifier(trainer, tokenized[eval_split], names)
    results = build_results(
        method=METHOD,
        base_model=model_args.model_name_or_path,
        dataset=dataset_source(data_args),
        label_names=names,
        num_train_samples=len(splits["train"]),
        eval_split=eval_split,
        metrics=metrics,
        train_runtime_s=train_output.metrics["train_runtime"],
        train_samples_per_second=train_output.metrics["train_samples_per_second"],
        trainable_params=trainable_params,
        total_params=total_params,
        seed=training_args.seed,
        hyperparameters=hyperparameters(training_args, data_args),
        num_processes=training_args.world_size,
    )

    trainer.save_model(training_args.output_dir)  # every process takes part; only the main one writes
    if trainer.is_world_process_zero():
        publish(training_args.output_dir, results, target, method_summary=SUMMARY)
    return results


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("shared").setLevel(logging.INFO)
    with exit_on_cli_error():
        dataclasses = [ModelArguments, DataArguments, TrainingArguments]
        main(*parse_cli(dataclasses, __doc__, **BOOK_RECIPE, output_dir=f"outputs/{METHOD}"))
