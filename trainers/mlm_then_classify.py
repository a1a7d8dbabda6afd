r"""Domain adaptation: continue the encoder's masked-language-model pretraining on the domain's text, then
fine-tune a classifier on the adapted encoder.

    accelerate launch -q --config_file accelerate_config.yaml trainers/mlm_then_classify.py \
        --model_name_or_path bert-base-cased --dataset_name rotten_tomatoes \
        --mlm_num_train_epochs 3 --output_dir outputs/mlm_then_classify [--push_to_hub --hub_model_id you/name]

Phase 1 trains AutoModelForMaskedLM on the training split's text (all of it, even when --samples_per_label
limits the labeled examples: text needs no labels) plus --unlabeled_file, masking --mlm_probability of the
tokens (--whole_word_masking masks every piece of a chosen word). Masked-LM perplexity on the validation text is
reported before and after. The adapted encoder is saved in output_dir/mlm (a fill-mask model), and with
--push_to_hub published to <hub_model_id>-mlm.
Phase 2 fine-tunes every weight of the adapted encoder with a new classification head, exactly as
full_finetune.py does, into output_dir (and <hub_model_id>). --phase mlm runs phase 1 alone; --phase classify
runs phase 2 alone, from an already adapted --model_name_or_path.
"""

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import datasets
import torch
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerState,
    set_seed,
)

from shared.args import DataArguments, ModelArguments, RecipeTrainingArguments, hub_args_from, parse_cli
from shared.card import card_details, write_encoder_card
from shared.classification import Method, train_classifier
from shared.data import FILE_BUILDERS, dataset_source, has_no_rows, load_labeled_data, sample_per_label
from shared.errors import InputError, configure_cli_logging, exit_on_cli_error
from shared.hub import check_model_source, load_pretrained, preflight, push_folder
from shared.results import model_reference
from shared.training import (
    check_checkpoint_fits,
    check_output_dir,
    checkpoint_run,
    full_disk_is_one_error,
    keep_logs_in,
    latest_complete_checkpoint,
    max_length_for,
    prepare_output_dir,
    resolve_checkpoint,
    run_training,
    save_final_model,
)

METHOD = "mlm_then_classify"
ENCODER_DIR = "mlm"
ADAPTATION_FILE = "adaptation.json"
PRIME = 1_000_003  # spreads the seeds of batches and processes apart
PHASE_FOLDERS = {"mlm": ENCODER_DIR, "classify": "."}  # where each phase keeps its checkpoints, in output_dir
logger = logging.getLogger(METHOD)


@dataclass
class MLMArguments:
    phase: Literal["both", "mlm", "classify"] = field(
        default="both", metadata={"help": "both; mlm: adapt the encoder only; classify: classifier only."}
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked in phase 1."})
    whole_word_masking: bool = field(default=False, metadata={"help": "Mask whole words, not word pieces."})
    mlm_num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs of masked-LM training (book: 10)."})
    unlabeled_file: str | None = field(
        default=None,
        metadata={"help": "More domain text for phase 1: .txt (one text per line) or csv/json/jsonl/parquet."},
    )

    def __post_init__(self):
        if not 0 < self.mlm_probability < 1:  # 0 masks nothing: a perplexity of NaN; 1 leaves nothing to read
            raise InputError(f"--mlm_probability {self.mlm_probability} must lie strictly between 0 and 1")
        if self.mlm_num_train_epochs <= 0:
            raise InputError(f"--mlm_num_train_epochs {self.mlm_num_train_epochs}: must be positive")


@dataclass
class Adaptation:
    """What phase 1 did; kept in the encoder's folder so that a run resumed in phase 2 still reports it."""

    encoder: str  # the adapted encoder's folder; with --phase classify, the given encoder
    num_texts: int
    revision: str = "main"
    published_as: str | None = None  # its Hub repo, once pushed
    perplexity_before: float | None = None
    perplexity_after: float | None = None
    runtime_s: float = 0.0
    samples_seen: float = 0.0

    def save(self) -> None:
        with open(os.path.join(self.encoder, ADAPTATION_FILE), "w") as f:
            json.dump({**asdict(self), "encoder": ENCODER_DIR}, f, indent=2)  # no path of this machine

    @classmethod
    def load(cls, encoder_dir: str) -> "Adaptation":
        path = os.path.join(encoder_dir, ADAPTATION_FILE)
        if not os.path.isfile(path):
            raise InputError(f"cannot resume the classifier: {path} is missing, so the masked-LM phase never finished")
        return cls(**{**json.load(open(path)), "encoder": encoder_dir})


class MaskingCollator(DataCollatorForLanguageModeling):
    """DataCollatorForLanguageModeling whose masks a resumed run reproduces, and which pads `offset_mapping`.

    Each batch is masked from its own seed, `seed` plus its index: a resumed Trainer skips the batches it already
    trained on without collating them, so masks drawn from one running generator (or the global one) would differ
    from the uninterrupted run's from there on. `offset_mapping`, which whole-word masking reads, is left ragged by
    the tokenizer's pad() (it fails on a batch of texts of different lengths), so it is padded here.
    """

    def __init__(self, *args, seed: int, batches_done: int = 0, **kwargs):
        super().__init__(*args, seed=seed, **kwargs)
        self.batches_done = batches_done

    def torch_call(self, examples):
        self.generator = torch.Generator().manual_seed(self.seed + PRIME * self.batches_done)
        self._generator_pid = os.getpid()  # keeps the parent class from replacing the generator
        self.batches_done += 1
        if "offset_mapping" in examples[0]:
            longest = max(len(example["input_ids"]) for example in examples)
            examples = [{**e, "offset_mapping": self._pad(list(e["offset_mapping"]), longest)} for e in examples]
        return super().torch_call(examples)

    def _pad(self, offsets: list, length: int) -> list:
        padding = [[0, 0]] * (length - len(offsets))
        return offsets + padding if self.tokenizer.padding_side == "right" else padding + offsets


class MaskedPositionsTrainer(Trainer):
    """A Trainer whose masked-LM head scores only the masked positions against the vocabulary.

    The head projects every position onto the whole vocabulary (30k words for BERT) while the loss reads only the
    masked ones (15%): for a small encoder that projection costs about as much as the encoder itself. Here the
    head's output layer (the model's output embeddings) sees only the masked rows, and the model's own loss runs
    on their labels: the same loss and gradients (tests/test_benchmarks.py), for a fraction of the head's work.
    """

    def compute_loss(self, model, inputs, *args, **kwargs):
        masked = inputs["labels"] != -100
        decoder = self.accelerator.unwrap_model(model).get_output_embeddings()
        hook = decoder.register_forward_pre_hook(lambda module, given: (given[0][masked], *given[1:]))
        try:
            return super().compute_loss(model, {**inputs, "labels": inputs["labels"][masked]}, *args, **kwargs)
        finally:
            hook.remove()


def read_domain_texts(train_texts: list[str], mlm_args: MLMArguments, text_column: str) -> list[str]:
    """The training text plus --unlabeled_file, non-empty lines only."""
    texts = list(train_texts)
    path = mlm_args.unlabeled_file
    if path:
        suffix = os.path.splitext(path)[1].lower()
        if not os.path.isfile(path):
            raise InputError(f"--unlabeled_file {path} does not exist")
        if suffix != ".txt" and suffix not in FILE_BUILDERS:
            raise InputError(f"--unlabeled_file must be .txt, {', '.join(FILE_BUILDERS)}; got {suffix or 'no suffix'}")
        if has_no_rows(path):
            raise InputError(f"--unlabeled_file {path} has no rows")
        try:
            extra = datasets.load_dataset("text" if suffix == ".txt" else FILE_BUILDERS[suffix], data_files=path)
        except Exception as err:  # datasets raises many types here; all mean "cannot read this file"
            raise InputError(f"could not read --unlabeled_file {path}: {err}") from err
        extra = extra["train"]
        column = "text" if suffix == ".txt" else text_column
        if column not in extra.column_names:
            raise InputError(
                f"--unlabeled_file {path} has no column {column!r}; it has {', '.join(extra.column_names)}"
            )
        texts += [t for t in extra[column] if isinstance(t, str) and t.strip()]
    return texts


def adapt_encoder(
    model_args: ModelArguments,
    texts: list[str],
    held_out: list[str],
    mlm_args: MLMArguments,
    data_args: DataArguments,
    training_args: RecipeTrainingArguments,
    checkpoint: str | None = None,
) -> Adaptation:
    """Phase 1: masked-LM training on `texts` (from `checkpoint` when resuming); perplexity on `held_out` before
    and after, under the same masks."""
    tokenizer = load_pretrained(AutoTokenizer, model_args.model_name_or_path, model_args.model_revision)
    config = load_pretrained(AutoConfig, model_args.model_name_or_path, model_args.model_revision)
    limit = max_length_for(data_args.max_seq_length, tokenizer, config)

    def tokenize(batch):
        # Whole-word masking finds word boundaries through the offsets; special tokens are never masked.
        return tokenizer(
            batch["text"],
            truncation=True,
            max_length=limit,
            return_special_tokens_mask=True,
            return_offsets_mapping=mlm_args.whole_word_masking,
        )

    text = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": texts}),
            "validation": datasets.Dataset.from_dict({"text": held_out}),
        }
    )
    with training_args.main_process_first(desc="tokenizing"):
        tokenized = text.map(tokenize, batched=True, remove_columns=["text"], desc="Tokenizing for masked LM")

    def collator(seed: int, batches_done: int = 0):
        return MaskingCollator(
            tokenizer,
            mlm_probability=mlm_args.mlm_probability,
            whole_word_mask=mlm_args.whole_word_masking,
            seed=seed,
            batches_done=batches_done,
        )

    # Training masks differ from the held-out ones and between processes; a resumed run goes on from its batch.
    train_seed = training_args.seed + 1 + PRIME * training_args.process_index
    batches_done = (
        TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json")).global_step
        * training_args.gradient_accumulation_steps
        if checkpoint
        else 0
    )

    set_seed(training_args.seed)
    model = load_pretrained(AutoModelForMaskedLM, model_args.model_name_or_path, model_args.model_revision)
    check_checkpoint_fits(checkpoint, model, model_args.model_name_or_path)
    encoder_dir = os.path.join(training_args.output_dir, ENCODER_DIR)
    mlm_training_args = replace(
        training_args,
        output_dir=encoder_dir,
        num_train_epochs=mlm_args.mlm_num_train_epochs,
        eval_strategy="no",
        early_stopping_patience=None,  # the classifier stops early, on labels; this phase has none
        # The collator needs special_tokens_mask and offset_mapping, which the model's forward does not take.
        remove_unused_columns=False,
    )
    keep_logs_in(encoder_dir)
    trainer = MaskedPositionsTrainer(
        model=model,
        args=mlm_training_args,
        train_dataset=tokenized["train"],
        processing_class=tokenizer,
        data_collator=collator(train_seed, batches_done),
    )
    train_collator = trainer.data_collator

    def perplexity() -> float:
        # A fresh collator seeded alike masks the held-out text identically before and after training.
        trainer.data_collator = collator(training_args.seed)
        loss = trainer.evaluate(tokenized["validation"])["eval_loss"]
        trainer.data_collator = train_collator
        return math.exp(loss)

    before = perplexity()
    output = run_training(trainer, {"method": METHOD, "phase": "mlm"}, checkpoint)
    after = perplexity()
    logger.info("masked-LM perplexity on held-out text: %.2f before, %.2f after", before, after)
    with full_disk_is_one_error(encoder_dir):
        save_final_model(trainer, encoder_dir)
    return Adaptation(
        encoder=encoder_dir,
        num_texts=len(texts),
        perplexity_before=before,
        perplexity_after=after,
        runtime_s=output.metrics["train_runtime"],
        samples_seen=output.metrics["train_samples_per_second"] * output.metrics["train_runtime"],
    )


# What main() takes, in order; the command line parses into these.
ARGUMENTS = [ModelArguments, DataArguments, MLMArguments, RecipeTrainingArguments]


def main(
    model_args: ModelArguments,
    data_args: DataArguments,
    mlm_args: MLMArguments,
    training_args: RecipeTrainingArguments,
) -> dict | None:
    # Everything that can be wrong with the request fails here, before a model is downloaded.
    hub_args = hub_args_from(training_args)
    output_dir = training_args.output_dir
    resumed_phase = checkpoint_to_resume(mlm_args.phase, training_args)
    keep = (ENCODER_DIR,) if mlm_args.phase == "classify" else ()  # an encoder adapted here by --phase mlm
    check_output_dir(output_dir, training_args.overwrite_output_dir, resumed_phase is not None, keep)
    # Text needs no labels: phase 1 reads the whole training split, phase 2 only the few-shot sample if asked.
    splits = load_labeled_data(replace(data_args, samples_per_label=None), training_args.seed)
    texts = read_domain_texts(splits["train"]["text"], mlm_args, data_args.text_column_name)
    if data_args.samples_per_label:
        splits["train"] = sample_per_label(splits["train"], data_args.samples_per_label, training_args.seed)
    check_model_source(model_args.model_name_or_path, model_args.model_revision)
    # Last: the Hub repos are created (shared.training.start_run's order), then --overwrite_output_dir clears the
    # folder.
    classify_target = preflight(hub_args, output_dir) if mlm_args.phase != "mlm" else None
    encoder_target = preflight(hub_args, output_dir, name_suffix="-mlm") if mlm_args.phase != "classify" else None
    prepare_output_dir(output_dir, training_args.overwrite_output_dir, resumed_phase is not None, keep)

    adaptation = Adaptation(encoder=model_args.model_name_or_path, revision=model_args.model_revision, num_texts=0)
    encoder_dir = os.path.join(output_dir, ENCODER_DIR)
    if mlm_args.phase != "classify" and resumed_phase == "classify":
        adaptation = Adaptation.load(encoder_dir)  # phase 1 finished before the run was stopped
    elif mlm_args.phase != "classify":
        checkpoint = training_args.resume_from_checkpoint if resumed_phase == "mlm" else None
        adaptation = adapt_encoder(model_args, texts, list(splits["validation"]["text"]), mlm_args, data_args,
                                   training_args, checkpoint)  # fmt: skip
        adaptation.published_as = encoder_target.repo_id if encoder_target else None
        # The main process writes the adapted encoder's files; the others wait for them before phase 2 loads them
        # (they read a tokenizer still being written, and failed).
        with training_args.main_process_first(desc="saving the adapted encoder"):
            if training_args.process_index == 0:
                adaptation.save()
                publish_encoder(adaptation, model_args, data_args, mlm_args, encoder_target)
    if mlm_args.phase == "mlm":
        return None
    if resumed_phase != "classify":
        training_args.resume_from_checkpoint = None  # the classifier starts afresh
    return classify(adaptation, model_args, data_args, mlm_args, training_args, splits, classify_target)


def checkpoint_to_resume(phase: str, training_args: RecipeTrainingArguments) -> str | None:
    """Which phase --resume_from_checkpoint resumes (None: no resume); the checkpoint's path replaces the flag.

    `latest` looks for the newest complete checkpoint of the later phase first: one of the classifier means the
    masked-LM phase had finished. A path resumes the phase its checkpoint records.
    """
    wanted = training_args.resume_from_checkpoint
    if not wanted:
        return None
    phases = [p for p in ("classify", "mlm") if phase in (p, "both")]
    if wanted != "latest":
        recorded = checkpoint_run(wanted).get("phase") if os.path.isdir(wanted) else None
        if recorded and recorded not in phases:
            raise InputError(
                f"--resume_from_checkpoint {wanted} is a checkpoint of phase {recorded}, which --phase {phase} "
                "does not run"
            )
        phases = [recorded or phases[0]]
    for candidate in phases:
        folder = os.path.join(training_args.output_dir, PHASE_FOLDERS[candidate])
        run = {"method": METHOD, "phase": candidate}
        if wanted == "latest" and candidate != phases[-1] and latest_complete_checkpoint(folder) is None:
            continue
        training_args.resume_from_checkpoint = resolve_checkpoint(wanted, folder, run)
        return candidate
    return None


def publish_encoder(adaptation, model_args, data_args, mlm_args, target) -> None:
    base_model, on_hub = model_reference(model_args.model_name_or_path)
    write_encoder_card(
        adaptation.encoder,
        repo_id=target.repo_id if target else ENCODER_DIR,
        base_model=base_model,
        base_model_on_hub=on_hub,
        dataset=dataset_source(data_args),
        num_texts=adaptation.num_texts,
        perplexity_before=adaptation.perplexity_before,
        perplexity_after=adaptation.perplexity_after,
        hyperparameters={
            "mlm_probability": mlm_args.mlm_probability,
            "whole_word_masking": mlm_args.whole_word_masking,
            "mlm_num_train_epochs": mlm_args.mlm_num_train_epochs,
            "unlabeled_file": os.path.basename(mlm_args.unlabeled_file) if mlm_args.unlabeled_file else None,
        },
        details=card_details(model_args, data_args),
    )
    if target:
        push_folder(
            adaptation.encoder, target, commit_message=f"masked-LM adaptation of {model_args.model_name_or_path}"
        )


def classify(adaptation, model_args, data_args, mlm_args, training_args, splits, target) -> dict:
    """Phase 2: the full fine-tuning recipe, started from the adapted encoder."""
    method = Method(
        METHOD,
        summary(adaptation),
        base_model=model_args.model_name_or_path,
        parent_model=adaptation.published_as,
        hyperparameters={
            "mlm_probability": mlm_args.mlm_probability,
            "whole_word_masking": mlm_args.whole_word_masking,
            "mlm_num_train_epochs": mlm_args.mlm_num_train_epochs,
        },
        details={
            # Where a reader (the Space's fill-mask tab) finds the encoder: its repo, else the folder beside the
            # model's files (or, with --phase classify, the encoder it was given).
            "adapted_encoder": adaptation.published_as or model_reference(adaptation.encoder)[0],
            "mlm_texts": adaptation.num_texts,
            "mlm_runtime_s": round(adaptation.runtime_s, 3),
            "perplexity_before": adaptation.perplexity_before,
            "perplexity_after": adaptation.perplexity_after,
        },
        # Both phases: the cost of the method is the adaptation plus the classifier.
        earlier_runtime_s=adaptation.runtime_s,
        earlier_samples=adaptation.samples_seen,
        publish_ignore=[f"{ENCODER_DIR}/**"],  # the adapted encoder has a repo of its own
        phase="classify",
    )
    # The adapted encoder in place of the original; the flags that describe the published model stay.
    encoder = replace(model_args, model_name_or_path=adaptation.encoder, model_revision=adaptation.revision)
    return train_classifier(encoder, data_args, training_args, splits, target, method)


def summary(adaptation: Adaptation) -> str:
    if adaptation.perplexity_before is None:
        encoder = model_reference(adaptation.encoder)[0]
        return f"a classifier is fine-tuned, every weight training, from the adapted encoder `{encoder}`."
    return (
        f"the encoder first continued masked-language-model pretraining on {adaptation.num_texts} texts of the "
        f"domain (held-out perplexity {adaptation.perplexity_before:.2f} before, {adaptation.perplexity_after:.2f} "
        "after); then every weight was fine-tuned with a new classification head."
    )


if __name__ == "__main__":
    configure_cli_logging(METHOD)
    with exit_on_cli_error():
        main(*parse_cli(ARGUMENTS, __doc__, output_dir=f"outputs/{METHOD}"))
