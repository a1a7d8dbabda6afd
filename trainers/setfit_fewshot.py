r"""SetFit: contrastive fine-tuning of a sentence-transformers body on pairs drawn from a few labeled examples,
then a classifier head on the tuned embeddings.

    accelerate launch -q --config_file accelerate_config.yaml trainers/setfit_fewshot.py \
        --model_name_or_path sentence-transformers/paraphrase-mpnet-base-v2 --dataset_name rotten_tomatoes \
        --samples_per_label 16 --output_dir outputs/setfit_fewshot [--push_to_hub --hub_model_id you/name]
    accelerate launch -q --config_file accelerate_config.yaml trainers/setfit_fewshot.py configs/setfit_fewshot.yaml

The defaults follow the book's SetFit recipe: 16 examples per label, 20 pair iterations, 3 epochs of the body.
The training flags are those of the other three methods, in setfit's terms: --num_train_epochs, --learning_rate
and --per_device_train_batch_size are the body's epochs, learning rate and pair batch size; --max_steps stops
the body; --save_strategy writes the body's checkpoints; --fp16/--bf16 train the body in mixed precision;
--report_to reports the body's training. --head_type logistic (default) fits scikit-learn's logistic regression
on the embeddings; differentiable trains a torch head (--head_learning_rate, --head_num_epochs). Flags of
transformers' Trainer that SetFit has no use for (--weight_decay, ...) are refused. --resume_from_checkpoint PATH
(or latest) resumes the body from one of its checkpoints and ends as an uninterrupted run would.
The model loads with `SetFitModel.from_pretrained(output_dir or repo id)`. Besides setfit's pickled head
(model_head.pkl), model_head.safetensors holds the same head without pickle.

Early stopping: --eval_strategy steps --eval_steps N (or epoch) evaluates the body by its loss on pairs drawn from
the validation split; with --early_stopping_patience P the body stops once that loss has not fallen for P
evaluations, and the best evaluation's body is kept (checkpoints are saved at each evaluation).

Processes: under `accelerate launch --num_processes N` (or --multi_gpu) every process trains the body,
data-parallel as the sentence-transformers trainer does under torch.distributed: every process draws the same
pairs (setfit's pair sampler and the batch order are seeded alike), takes every N-th batch of them, and the
gradients are averaged, so N processes of batch B train as one of batch N x B. The head is then trained, and the
model saved and pushed, once, by the main process; the others exit 0 once the body is trained.
"""

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import numpy as np
import setfit
import torch
from setfit import SetFitModel
from setfit.modeling import SetFitHead
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from transformers import TrainerCallback, set_seed

from shared.args import (
    LAUNCHER_PRECISION,
    DataArguments,
    ModelArguments,
    common_training_arguments,
    mixed_precision_of,
    parse_cli,
    with_defaults,
)
from shared.card import card_details, widget_texts
from shared.data import (
    class_weights,
    dataset_source,
    eval_split_name,
    is_multi_label,
    label_matrix,
    label_names,
    label_setup,
    load_labeled_data,
    with_multi_hot_labels,
)
from shared.errors import InputError, configure_cli_logging, exit_on_cli_error
from shared.hub import SENTENCE_TRANSFORMERS_FILES, check_model_source, load_sentence_transformer
from shared.metrics import classification_metrics, multi_label_metrics, over_threshold
from shared.onnx_export import export_int8
from shared.publish import publish
from shared.results import build_results, count_parameters
from shared.setfit_head import save_portable_head
from shared.setfit_loss import DistinctTextsCosineSimilarityLoss
from shared.training import (
    check_checkpoint_fits,
    check_finite_probabilities,
    early_stopping,
    early_stopping_summary,
    full_disk_is_one_error,
    guarded,
    keep_logs_in,
    max_length_for,
    start_run,
)

METHOD = "setfit_fewshot"
SUMMARY = (
    "the sentence-transformers body is fine-tuned contrastively on pairs of the labeled examples (same label: "
    "similar, different labels: dissimilar), then a classifier head is trained on its embeddings."
)
# What the body's evaluations measure: the contrastive loss on pairs drawn from the validation split (the head is
# trained after the body, so no classification metric exists while the body trains).
BODY_METRIC = "embedding_loss"
logger = logging.getLogger(METHOD)


@dataclass
class SetFitArguments:
    num_iterations: int = field(default=20, metadata={"help": "Pairs generated per labeled example."})
    head_type: Literal["logistic", "differentiable"] = field(
        default="logistic", metadata={"help": "logistic: scikit-learn logistic regression; differentiable: torch."}
    )
    head_num_epochs: int = field(default=16, metadata={"help": "Epochs of the differentiable head."})
    head_learning_rate: float = field(default=1e-2, metadata={"help": "Learning rate of the differentiable head."})


# The shared flags, with the book's SetFit recipe as defaults: a sentence-transformers body, 16 examples per label,
# 3 epochs of the body.
SetFitModelArguments = with_defaults(
    ModelArguments, "SetFitModelArguments", model_name_or_path="sentence-transformers/paraphrase-mpnet-base-v2"
)
SetFitDataArguments = with_defaults(DataArguments, "SetFitDataArguments", samples_per_label=16)
# No evaluation unless asked for: each one encodes pairs of the whole validation split.
SetFitTrainingArguments = common_training_arguments(
    "SetFitTrainingArguments",
    metrics=(BODY_METRIC,),
    num_train_epochs=3.0,
    eval_strategy="no",
)
# Multi-label data: one logistic regression (or one sigmoid of the differentiable head) per label.
MULTI_TARGET_STRATEGY = "one-vs-rest"


class PairShare(TrainerCallback):
    """Says which share of the pairs this process trains the body on: all of them alone, every N-th batch of N."""

    def on_train_begin(self, args, state, control, train_dataloader=None, st_args=None, **kwargs):
        pairs = len(train_dataloader.dataset)
        # Under torch.distributed, sentence-transformers drops an incomplete last batch, so every batch is full.
        share = min(len(train_dataloader) * st_args.per_device_train_batch_size, pairs)
        logger.info(
            "process %d of %d trains the body on %d of the %d pairs per epoch",
            st_args.process_index, st_args.world_size, share, pairs,
        )  # fmt: skip


def build_model(
    model_args: ModelArguments,
    args: SetFitArguments,
    names: list[str],
    multi_label: bool = False,
    class_weight: str | None = None,
    weights: list[float] | None = None,
) -> SetFitModel:
    """Body from the Hub or a folder; a new head. The body is loaded alone so that a base model which is itself a
    SetFit repo never has its pickled head unpickled.

    Multi-label: setfit's one-vs-rest strategy. --class_weight (`class_weight`, as `weights` per label id) weighs
    the head: scikit-learn's class_weight for the logistic head, a weighted loss for the differentiable one."""
    if multi_label and args.head_type == "logistic" and class_weight not in (None, "balanced"):
        raise InputError(
            "--class_weight with weights per label name cannot weigh a multi-label logistic head (one-vs-rest fits "
            "one model for all labels alike): use --class_weight balanced or --head_type differentiable"
        )
    body = load_sentence_transformer(model_args.model_name_or_path, model_args.model_revision)
    if args.head_type == "differentiable":
        dimension = body.get_sentence_embedding_dimension()
        head = SetFitHead(in_features=dimension, out_features=len(names), multitarget=multi_label)
        if weights:  # setfit trains the head with get_loss_fn()'s loss: BCE for multi-label, else cross-entropy
            weight = torch.tensor(weights, device=head.device)
            head.get_loss_fn = (
                partial(torch.nn.BCEWithLogitsLoss, pos_weight=weight)
                if multi_label
                else partial(torch.nn.CrossEntropyLoss, weight=weight)
            )
    elif multi_label:  # each label's own yes/no regression, balanced within it
        head = OneVsRestClassifier(LogisticRegression(max_iter=1000, class_weight=class_weight))
    else:
        head = LogisticRegression(max_iter=1000, class_weight=dict(enumerate(weights)) if weights else None)
    strategy = MULTI_TARGET_STRATEGY if multi_label else None
    return SetFitModel(model_body=body, model_head=head, labels=names, multi_target_strategy=strategy)


# What main() takes, in order; the command line parses into these.
ARGUMENTS = [SetFitModelArguments, SetFitDataArguments, SetFitArguments, SetFitTrainingArguments]


def main(
    model_args: ModelArguments,
    data_args: DataArguments,
    setfit_args: SetFitArguments,
    training_args: SetFitTrainingArguments,
) -> dict | None:
    # Everything that can be wrong with the request fails here, before the model is downloaded.
    splits = load_labeled_data(data_args, training_args.seed)
    names = label_names(splits)
    multi_label = is_multi_label(splits)
    weights = class_weights(splits, data_args.class_weight)
    check_model_source(model_args.model_name_or_path, model_args.model_revision, SENTENCE_TRANSFORMERS_FILES)
    # Last: the Hub repo is created, then --overwrite_output_dir clears the folder.
    target = start_run(training_args, {"method": METHOD})
    checkpoint = training_args.resume_from_checkpoint

    # Seed before building the model, so the head starts from the same weights on every run.
    set_seed(training_args.seed)
    model = build_model(model_args, setfit_args, names, multi_label, data_args.class_weight, weights)
    check_checkpoint_fits(checkpoint, model.model_body[0].auto_model, model_args.model_name_or_path)
    # Naming the data keeps setfit's model card from searching the Hub's dataset list for it; the card we
    # publish is our own (shared.card), written over setfit's at the end with setfit's sections inside.
    model.model_card_data.dataset_id = dataset_source(data_args)
    body = model.model_body
    max_length = max_length_for(data_args.max_seq_length, body.tokenizer, body[0].auto_model.config)
    body.max_seq_length = max_length
    keep_logs_in(training_args.output_dir)
    stopping = early_stopping(training_args, BODY_METRIC)
    # Multi-label heads (and setfit's pair sampler) take each text's labels as 0/1 per label.
    data = with_multi_hot_labels(splits) if multi_label else splits
    with mixed_precision_while_built(training_args):
        trainer = setfit.Trainer(
            model=model,
            args=setfit_training_arguments(training_args, setfit_args),
            train_dataset=data["train"],
            eval_dataset=data["validation"],  # drawn into pairs only when --eval_strategy asks for evaluations
            callbacks=[PairShare(), *stopping],
        )
    check_launch(trainer)
    resume_body_from(trainer, checkpoint, training_args)
    # setfit's Trainer.train() in its two steps: the body on every process (data-parallel when launched on
    # several), then the head on the main process only.
    train = trainer.dataset_to_parameters(data["train"])
    validation = trainer.dataset_to_parameters(data["validation"])
    is_main = trainer.st_trainer.is_world_process_zero()
    start = time.perf_counter()
    with guarded(trainer.st_trainer, {"method": METHOD}, training_args.export_onnx):
        trainer.train_embeddings(*train, *validation)
        if is_main:
            trainer.train_classifier(*train)
    runtime = time.perf_counter() - start
    if not is_main:
        logger.info("process %d: body trained; the main process trains the head, saves and publishes", rank(trainer))
        return None
    pairs = pairs_seen(trainer)

    eval_split = eval_split_name(splits)
    texts = list(splits[eval_split]["text"])
    probabilities = np.asarray(
        model.predict_proba(texts, batch_size=training_args.per_device_eval_batch_size, as_numpy=True)
    )
    check_finite_probabilities(probabilities)  # a diverged head, logistic or differentiable
    # The columns are label ids 0..n-1: the head was fitted on examples of every label.
    if multi_label:
        predicted = over_threshold(probabilities, data_args.threshold)
        metrics = multi_label_metrics(label_matrix(splits[eval_split]).astype(int), predicted, names)
    else:
        metrics = classification_metrics(list(splits[eval_split]["label"]), probabilities.argmax(axis=-1), names)
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
        seed=training_args.seed,
        hyperparameters={
            "num_iterations": setfit_args.num_iterations,
            "num_train_epochs": training_args.num_train_epochs,
            "max_steps": training_args.max_steps,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "learning_rate": training_args.learning_rate,
            "head_type": setfit_args.head_type,
            "head_learning_rate": setfit_args.head_learning_rate,
            "head_num_epochs": setfit_args.head_num_epochs,
            "samples_per_label": data_args.samples_per_label,
            "max_seq_length": max_length,
            "mixed_precision": trainer.st_trainer.args.mixed_precision,
            "processes": trainer.st_trainer.args.world_size,
            "multi_target_strategy": model.multi_target_strategy,
        },
        method_details={
            "head": setfit_args.head_type,
            "pickle_free_head": "model_head.safetensors",
            "training_samples": "sentence pairs",
            "pairs_seen": round(pairs),
        },
        num_processes=trainer.st_trainer.args.world_size,
        early_stopping=early_stopping_summary(trainer.st_trainer.state, training_args),
        **label_setup(splits, data_args),
    )

    vars(model.model_head).pop("get_loss_fn", None)  # a weighted loss was for training: save setfit's own head
    with full_disk_is_one_error(training_args.output_dir):
        model.save_pretrained(training_args.output_dir)
        save_portable_head(model.model_head, training_args.output_dir)
        if training_args.export_onnx:
            export_int8(training_args.output_dir)
        examples = widget_texts(splits[eval_split])
        card = card_details(model_args, data_args, widget_texts=examples, library_sections=setfit_sections(model))
        publish(training_args.output_dir, results, target, method_summary=SUMMARY, details=card, library_name="setfit")
    return results


@contextlib.contextmanager
def mixed_precision_while_built(args: SetFitTrainingArguments):
    """The flags' precision for the inner Trainer that setfit.Trainer builds. setfit builds its arguments before it
    applies ours (its use_amp comes too late to reach the accelerator), and transformers settles the precision as
    arguments are built, from what `accelerate launch --mixed_precision` sets: this variable. Set only while the
    Trainer is built, so that main() called from Python leaves nothing behind for the runs that follow (nor for the
    processes they launch)."""
    name, before = LAUNCHER_PRECISION, os.environ.get(LAUNCHER_PRECISION)
    os.environ[name] = mixed_precision_of(args)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def check_launch(trainer: setfit.Trainer) -> None:
    """Processes launched as several must train as several: without a process group each would train the body
    alone and save and publish its own model."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != trainer.st_trainer.args.world_size:
        raise InputError(
            f"launched as {launched} processes, but they did not join one torch.distributed group (a GPU for each "
            "is needed, unless training is on the CPU): set ACCELERATE_USE_CPU=true to train on the CPU across "
            "processes, or launch one process"
        )


def resume_body_from(trainer: setfit.Trainer, checkpoint: str | None, args: SetFitTrainingArguments) -> None:
    """Have setfit's train_embeddings, which draws the pairs and then calls its inner sentence-transformers Trainer's
    train(), resume that Trainer from `checkpoint`: the pairs are drawn alike from the same seed, and the Trainer
    skips the batches already trained on, so the run ends as an uninterrupted one would.

    And pass on what setfit does not: early stopping's count of evaluations without improvement, kept in each
    checkpoint; and the batch size in the inner Trainer's state, which setfit sets after the Trainer recorded its
    own default (8), so that every resume warned of a batch size that did not match the checkpoint's."""
    st_trainer = trainer.st_trainer
    st_trainer.train = partial(st_trainer.train, resume_from_checkpoint=checkpoint)
    st_trainer.args.restore_callback_states_from_checkpoint = args.early_stopping_patience is not None
    st_trainer._train_batch_size = st_trainer.args.train_batch_size


def setfit_training_arguments(args: SetFitTrainingArguments, setfit_args: SetFitArguments) -> setfit.TrainingArguments:
    """The shared training flags in setfit's terms: they drive the body's contrastive training; the head has
    its own. setfit's pairs of values are (body, head)."""
    return setfit.TrainingArguments(
        output_dir=args.output_dir,
        num_iterations=setfit_args.num_iterations,
        loss=DistinctTextsCosineSimilarityLoss,  # setfit's loss, each distinct text of a batch encoded once
        num_epochs=(args.num_train_epochs, setfit_args.head_num_epochs),
        batch_size=(args.per_device_train_batch_size, args.per_device_train_batch_size),
        body_learning_rate=(args.learning_rate, args.learning_rate),
        head_learning_rate=setfit_args.head_learning_rate,
        max_steps=args.max_steps,
        seed=args.seed,
        use_amp=args.fp16,
        report_to=args.report_to,
        logging_steps=args.logging_steps,
        eval_strategy=args.eval_strategy,
        eval_steps=args.eval_steps,
        save_strategy=args.save_strategy,
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        # With --early_stopping_patience, the best evaluation's body is kept (shared.training.early_stopping).
        load_best_model_at_end=args.early_stopping_patience is not None,
        metric_for_best_model=args.metric_for_best_model or BODY_METRIC,
    )


def setfit_sections(model: SetFitModel) -> str:
    """The sections of setfit's own card that ours keeps, rendered by setfit from what its Trainer gathered of the
    training set: examples of each label, and the texts' word counts and the examples per label."""
    data = model.model_card_data.to_dict()
    return "\n\n".join(
        [
            "## Model Labels",
            data["label_examples"],
            "## Training Set Metrics",
            data["train_set_metrics"],
            data["train_set_sentences_per_label_list"],
        ]
    )


def rank(trainer: setfit.Trainer) -> int:
    return trainer.st_trainer.args.process_index


def pairs_seen(trainer: setfit.Trainer) -> float:
    """Sentence pairs the body trained on, from the inner sentence-transformers Trainer's own figures."""
    summary = trainer.st_trainer.state.log_history[-1]
    return summary["train_samples_per_second"] * summary["train_runtime"]


def head_and_body_parameters(model: SetFitModel) -> int:
    """Every SetFit parameter trains: the whole body, then the head (coefficients for logistic regression)."""
    head = model.model_head
    if isinstance(head, LogisticRegression):
        head_params = head.coef_.size + head.intercept_.size
    elif isinstance(head, OneVsRestClassifier):  # multi-label: one regression per label
        head_params = sum(e.coef_.size + e.intercept_.size for e in head.estimators_)
    else:
        head_params = count_parameters(head)[1]
    return count_parameters(model.model_body)[1] + head_params


if __name__ == "__main__":
    configure_cli_logging(METHOD)
    with exit_on_cli_error():
        main(*parse_cli(ARGUMENTS, __doc__, output_dir=f"outputs/{METHOD}"))
