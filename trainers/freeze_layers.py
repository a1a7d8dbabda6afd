r"""Layer freezing: keep the embeddings and the lower N transformer blocks as pretrained, train the rest.

    accelerate launch -q --config_file accelerate_config.yaml trainers/freeze_layers.py \
        --model_name_or_path bert-base-cased --dataset_name rotten_tomatoes \
        --num_frozen_layers 10 --output_dir outputs/freeze_layers [--push_to_hub --hub_model_id you/name]

--num_frozen_layers N freezes the embeddings and encoder blocks 0..N-1. N equal to the model's layer count
(the default) leaves only the head trainable (the pooler, where the model has one, and the classifier): the
book's "train only the classifier". N = 0 trains everything, like full_finetune.py. Freezing follows the
model's module structure, not parameter indices, so it works for BERT, RoBERTa, DistilBERT, MPNet and
DeBERTa-v2 alike. Everything else (data flags, outputs, publishing) is as in full_finetune.py.
"""

import logging
from dataclasses import dataclass, field
from functools import partial

import torch
from transformers import AutoConfig, PreTrainedModel

from shared.args import DataArguments, ModelArguments, RecipeTrainingArguments, parse_cli
from shared.classification import Method, train_classifier
from shared.data import load_labeled_data
from shared.errors import InputError, configure_cli_logging, exit_on_cli_error
from shared.hub import load_pretrained
from shared.results import count_parameters
from shared.training import start_run

METHOD = "freeze_layers"


@dataclass
class FreezeArguments:
    num_frozen_layers: int | None = field(
        default=None,
        metadata={"help": "Freeze the embeddings and blocks 0..N-1. Default: all blocks, so only the head trains."},
    )


def freeze_lower_layers(model: PreTrainedModel, num_frozen_layers: int) -> list[str]:
    """Freeze the embeddings and the first `num_frozen_layers` encoder blocks; return the frozen names.

    The encoder's blocks are the ModuleList inside the base model with one entry per layer. Whatever else the
    base model holds outside the blocks and its pooler (embeddings, and the relative-position tables that
    MPNet and DeBERTa-v2 share across blocks) sits below block 0, so it freezes with the lowest layer.
    Parameters outside the base model (the classification head) always train.
    """
    if num_frozen_layers == 0:
        return []
    base = model.base_model
    prefix = model.base_model_prefix
    blocks_name = encoder_blocks_name(model)
    kept = {f"{blocks_name}.{i}." for i in range(num_frozen_layers, model.config.num_hidden_layers)}
    frozen = []
    for name, param in base.named_parameters():
        if name.startswith("pooler.") or any(name.startswith(block) for block in kept):
            continue
        param.requires_grad = False
        frozen.append(f"{prefix}.{name}")
    return frozen


def encoder_blocks_name(model: PreTrainedModel) -> str:
    """Dotted name, inside the base model, of the ModuleList holding one transformer block per layer."""
    for name, module in model.base_model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == model.config.num_hidden_layers:
            return name
    raise ValueError(f"no list of {model.config.num_hidden_layers} encoder blocks in {type(model).__name__}")


# What main() takes, in order; the command line parses into these.
ARGUMENTS = [ModelArguments, DataArguments, FreezeArguments, RecipeTrainingArguments]


def main(
    model_args: ModelArguments,
    data_args: DataArguments,
    freeze_args: FreezeArguments,
    training_args: RecipeTrainingArguments,
) -> dict:
    # Everything that can be wrong with the request fails here, before the model is downloaded.
    splits = load_labeled_data(data_args, training_args.seed)
    config = load_pretrained(AutoConfig, model_args.model_name_or_path, model_args.model_revision)
    num_layers = config.num_hidden_layers
    num_frozen = num_layers if freeze_args.num_frozen_layers is None else freeze_args.num_frozen_layers
    if not 0 <= num_frozen <= num_layers:
        raise InputError(
            f"--num_frozen_layers {num_frozen} is out of range: {model_args.model_name_or_path} has {num_layers} "
            f"layers, so use 0..{num_layers} ({num_layers} trains only the head)"
        )
    method = Method(
        METHOD,
        summary(num_frozen, num_layers),
        prepare_model=partial(freeze, num_frozen_layers=num_frozen),
        details={"num_frozen_layers": num_frozen, "num_layers": num_layers},
        run_flags={"num_frozen_layers": num_frozen},
    )
    # Last: the Hub repo is created, then --overwrite_output_dir clears the folder.
    target = start_run(training_args, method.run)
    return train_classifier(model_args, data_args, training_args, splits, target, method)


def freeze(model: PreTrainedModel, num_frozen_layers: int) -> dict:
    """The method's hook into the recipe: freeze, and say how much."""
    frozen = freeze_lower_layers(model, num_frozen_layers)
    trainable, total = count_parameters(model)
    logging.getLogger(METHOD).info("froze %d tensors: %s of %s parameters train", len(frozen), f"{trainable:,}",
                                   f"{total:,}")  # fmt: skip
    return {"frozen_tensors": len(frozen)}


def summary(num_frozen: int, num_layers: int) -> str:
    if num_frozen == 0:
        return "nothing is frozen: every weight trains, as in full fine-tuning."
    if num_frozen == num_layers:
        return f"the embeddings and all {num_layers} encoder blocks are frozen; only the head trains."
    return (
        f"the embeddings and encoder blocks 0..{num_frozen - 1} are frozen; blocks {num_frozen}..{num_layers - 1}, "
        "the pooler and the classifier train."
    )


if __name__ == "__main__":
    configure_cli_logging(METHOD)
    with exit_on_cli_error():
        main(*parse_cli(ARGUMENTS, __doc__, output_dir=f"outputs/{METHOD}"))
