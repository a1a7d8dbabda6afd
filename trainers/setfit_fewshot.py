"""SetFit: contrastive fine-tuning of a sentence-transformers body on pairs drawn from a few labeled examples,
then a classifier head on the tuned embeddings.

    accelerate launch --config_file accelerate_config.yaml trainers/setfit_fewshot.py \
        --model_name_or_path sentence-transformers/paraphrase-mpnet-base-v2 --dataset_name rotten_tomatoes \
        --samples_per_label 16 --output_dir outputs/setfit_fewshot [--push_to_hub --hub_model_id you/name]

The defaults follow the book's SetFit recipe: 16 examples per label, 20 pair iterations, 3 epochs of the body.
--head_type logistic (default) fits scikit-learn's logistic regression on the embeddings; differentiable
trains a torch head instead. The model loads with `SetFitModel.from_pretrained(output_dir or repo id)`.
Besides setfit's pickled head (model_head.pkl), model_head.safetensors holds the same head without pickle.

Processes: SetFit trains on the main process only. Its few-shot pair datasets take minutes on one device, so
under `accelerate launch --num_processes N` the other N-1 processes exit at once instead of training copies,
and the model is saved and pushed once.
"""

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import setfit
from setfit import SetFitModel
from setfit.modeling import SetFitHead
from sklearn.linear_model import LogisticRegression
from transformers import set_seed

from shared.args import DataArguments, HubArguments, ModelArguments, parse_cli
from shared.data import dataset_source, eval_split_name, label_names, load_labeled_data
from shared.errors import exit_on_cli_error
from shared.hub import load_sentence_transformer, preflight
from shared.metrics import classification_metrics
from shared.publish import publish
from shared.results import build_results, count_parameters
from shared.setfit_head import save_portable_head

METHOD = "setfit_fewshot"
SUMMARY = (
    "the sentence-transformers body is fine-tuned contrastively on pairs of the labeled examples (same label: "
    "similar, different labels: dissimilar), then a classifier head is trained on its embeddings."
)
# Variables through which torchrun and accelerate tell a process it is one of several.
DISTRIBUTED_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
)
logger = logging.getLogger(METHOD)


@dataclass
class SetFitArguments:
    output_dir: str = field(default=f"outputs/{METHOD}", metadata={"help": "Where the model and card are saved."})
    num_iterations: int = field(default=20, metadata={"help": "Pairs generated per labeled example."})
    num_epochs: int = field(default=3, metadata={"help": "Epochs of contrastive training of the body."})
    head_type: Literal["logistic", "differentiable"] = field(
        default="logistic", metadata={"help": "logistic: scikit-learn logistic regression; differentiable: torch."}
    )
    head_num_epochs: int = field(default=16, metadata={"help": "Epochs of the differentiable head."})
    batch_size: int = field(default=16, metadata={"help": "Pairs per batch for the body."})
    body_learning_rate: float = field(default=2e-5, metadata={"help": "Learning rate of the body."})
    head_learning_rate: float = field(default=1e-2, metadata={"help": "Learning rate of the differentiable head."})
    max_steps: int = field(default=-1, metadata={"help": "Stop the body after this many steps (-1: no limit)."})
    seed: int = field(default=42, metadata={"help": "Seed of the few-shot sample, the pairs and the head."})


def is_main_process_alone() -> bool:
    """True on the process that trains; False on the others, which have nothing to do.

    The main process forgets that it was launched among several, or setfit's Trainer would wait for the
    others to join a process group they have already left.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        logger.info("SetFit trains on the main process only; process %s exits", os.environ["RANK"])
        return False
    for name in DISTRIBUTED_ENV:
        os.environ.pop(name, None)
    return True


def build_model(model_args: ModelArguments, args: SetFitArguments, names: list[str]) -> SetFitModel:
    """Body from the Hub or a folder; a new head. The body is loaded alone so that a base model which is itself a
    SetFit repo never has its pickled head unpickled."""
    body = load_sentence_transformer(model_args.model_name_or_path, model_args.model_revision)
    if args.head_type == "differentiable":
        head = SetFitHead(in_features=body.get_sentence_embedding_dimension(), out_features=len(names))
    else:
        head = LogisticRegression(max_iter=1000)
    return SetFitModel(model_body=body, model_head=head, labels=names)


def main(
    model_args: ModelArguments, data_args: DataArguments, setfit_args: SetFitArguments, hub_args: HubArguments
) -> dict | None:
    if not is_main_process_alone():
        return None
    # Everything that can be wrong with the request fails here, before the model is downloaded.
    target = preflight(hub_args, setfit_args.output_dir)
    splits = load_labeled_data(data_args, setfit_args.seed)
    names = label_names(splits)

    # Seed before building the model, so the head starts from the same weights on every run.
    set_seed(setfit_args.seed)
    model = build_model(model_args, setfit_args, names)
    # Naming the data keeps setfit's model card from searching the Hub's dataset list for it; the card we
    # publish is our own (shared.card), written over setfit's at the end.
    model.model_card_data.dataset_id = dataset_source(data_args)
    model.model_body.max_seq_length = data_args.max_seq_length
    training_args = setfit.TrainingArguments(
        output_dir=setfit_args.output_dir,  # nothing is written there while training: save_strategy "no"
        num_iterations=setfit_args.num_iterations,
        num_epochs=(setfit_args.num_epochs, setfit_args.head_num_epochs),
        batch_size=(setfit_args.batch_size, setfit_args.batch_size),
        body_learning_rate=(setfit_args.body_learning_rate, setfit_args.body_learning_rate),
        head_learning_rate=setfit_args.head_learning_rate,
        max_steps=setfit_args.max_steps,
        seed=setfit_args.seed,
        save_strategy="no",
        report_to="none",
    )
    trainer = setfit.Trainer(model=model, args=training_args, train_dataset=splits["train"])
    start = time.perf_counter()
    trainer.train()
    runtime = time.perf_counter() - start
    pairs = pairs_seen(trainer)

    eval_split = eval_split_name(splits)
    predictions = model.predict(list(splits[eval_split]["text"]), use_labels=False, as_numpy=True)
    metrics = classification_metrics(list(splits[eval_split]["label"]), np.asarray(predictions), names)
    results = build_results(
        method=METHOD,
        base_model=model_args.model_name_or_path,
        dataset=dataset_source(data_args),
        label_names=names,
        num_train_samples=len(splits["train"]),
        eval_split=eval_split,
        metrics=metrics,
        train_runtime_s=runtime,
        # SetFit's training samples are sentence pairs: those the body saw, over the whole run's time.
        train_samples_per_second=pairs / runtime,
        trainable_params=head_and_body_parameters(model),
        total_params=head_and_body_parameters(model),
        seed=setfit_args.seed,
        hyperparameters={
            "num_iterations": setfit_args.num_iterations,
            "num_epochs": setfit_args.num_epochs,
            "head_type": setfit_args.head_type,
            "batch_size": setfit_args.batch_size,
            "body_learning_rate": setfit_args.body_learning_rate,
            "head_learning_rate": setfit_args.head_learning_rate,
            "max_steps": setfit_args.max_steps,
            "samples_per_label": data_args.samples_per_label,
            "max_seq_length": data_args.max_seq_length,
        },
        method_details={
            "head": setfit_args.head_type,
            "pickle_free_head": "model_head.safetensors",
            "training_samples": "sentence pairs",
            "pairs_seen": round(pairs),
        },
    )

    model.save_pretrained(setfit_args.output_dir)
    save_portable_head(model.model_head, setfit_args.output_dir)
    publish(setfit_args.output_dir, results, target, method_summary=SUMMARY, library_name="setfit")
    return results


def pairs_seen(trainer: setfit.Trainer) -> float:
    """Sentence pairs the body trained on, from the inner sentence-transformers Trainer's own figures."""
    summary = trainer.st_trainer.state.log_history[-1]
    return summary["train_samples_per_second"] * summary["train_runtime"]


def head_and_body_parameters(model: SetFitModel) -> int:
    """Every SetFit parameter trains: the whole body, then the head (coefficients for logistic regression)."""
    head = model.model_head
    if isinstance(head, LogisticRegression):
        head_params = head.coef_.size + head.intercept_.size
    else:
        head_params = count_parameters(head)[1]
    return count_parameters(model.model_body)[1] + head_params


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("shared").setLevel(logging.INFO)
    logger.setLevel(logging.INFO)
    with exit_on_cli_error():
        dataclasses = [ModelArguments, DataArguments, SetFitArguments, HubArguments]
        main(
            *parse_cli(
                dataclasses,
                __doc__,
                model_name_or_path="sentence-transformers/paraphrase-mpnet-base-v2",
                samples_per_label=16,
            )
        )
