"""The masked-LM phase of mlm_then_classify against DataCollatorForLanguageModeling in random order.

The anchor is the book's masked-LM recipe as transformers' Trainer runs it by default: AutoModelForMaskedLM,
DataCollatorForLanguageModeling masking 15%, batches of 16 in random order, fp32, lr 2e-5, weight decay 0.01, one
epoch. The project side is trainers/mlm_then_classify.py's main() with --phase mlm and its defaults. Quality:
perplexity of each trained encoder on the same held-out text under the same masks (lower is better).

    python benchmarks/mlm_then_classify.py [--quick] [--threads N]
"""

import json
import math
import os
from dataclasses import replace

import torch
from _harness import Figures, Section, load_trainer, parse_args
from _workloads import demo_reviews, varied_lengths
from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
)

from shared.args import ModelArguments, RecipeTrainingArguments
from shared.data import load_labeled_data


def book_recipe(model_path: str, texts: list[str], args, output_dir: str) -> tuple[Figures, torch.nn.Module]:
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    torch.manual_seed(args.seed)
    model = AutoModelForMaskedLM.from_pretrained(model_path)
    limit = min(128, model.config.max_position_embeddings)  # the project caps alike
    train = [tokenizer(text, truncation=True, max_length=limit) for text in texts]
    training_args = TrainingArguments(
        output_dir, learning_rate=2e-5, per_device_train_batch_size=16, num_train_epochs=1, weight_decay=0.01,
        save_strategy="no", report_to="none", seed=args.seed, disable_tqdm=True,
    )  # fmt: skip
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, data_collator=collator)
    metrics = trainer.train().metrics
    figures = Figures("book recipe (anchor)", metrics["train_samples_per_second"], runtime_s=metrics["train_runtime"],
                      note="DataCollatorForLanguageModeling, random order, fp32")  # fmt: skip
    return figures, model


def project(model_path: str, data_args, args, output_dir: str, name: str, note: str, **settings):
    trainer = load_trainer("mlm_then_classify")
    training_args = RecipeTrainingArguments(output_dir=output_dir, seed=args.seed, disable_tqdm=True, **settings)
    trainer.main(ModelArguments(model_path), data_args, trainer.MLMArguments(phase="mlm"), training_args)
    encoder = os.path.join(output_dir, trainer.ENCODER_DIR)
    with open(os.path.join(encoder, trainer.ADAPTATION_FILE)) as f:
        adaptation = json.load(f)
    figures = Figures(name, adaptation["samples_seen"] / adaptation["runtime_s"], runtime_s=adaptation["runtime_s"],
                      note=note)  # fmt: skip
    return figures, AutoModelForMaskedLM.from_pretrained(encoder)


def held_out_perplexity(model, tokenizer, texts: list[str], seed: int) -> float:
    """exp of the mean loss over the masked tokens of `texts`, masked once from `seed`: the same masks for
    every model measured."""
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(texts), 32):
            limit = min(128, model.config.max_position_embeddings)
            batch = collator([tokenizer(t, truncation=True, max_length=limit) for t in texts[start : start + 32]])
            masked = int((batch["labels"] != -100).sum())
            if masked:
                total += float(model(**batch).loss) * masked
                count += masked
    return math.exp(total / count)


def main():
    args = parse_args(__doc__)
    section = Section(
        "mlm_then_classify",
        "Training: the masked-LM phase against DataCollatorForLanguageModeling in random order",
        args,
        "Anchor: `Trainer` + `DataCollatorForLanguageModeling` (15% masked), batches of 16 in random order, fp32, "
        "lr 2e-5, one epoch. Project: `trainers/mlm_then_classify.py --phase mlm` with its defaults (batches "
        "grouped by length, bf16 where the hardware has it, the vocabulary projection run on the masked positions "
        "only). samples/s: texts over the Trainer's train_runtime. The quality column holds held-out perplexity "
        "(lower is better), the same masks for both models.",
    )
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    folder = iter(os.path.join(args.work_dir, f"run{i}") for i in range(100))
    quick = {"num_train": 48, "num_test": 30} if args.quick else {"num_train": 200}
    workloads = [
        ("varied lengths (200 texts, 10-120 tokens)", varied_lengths(os.path.join(args.work_dir, "varied"), **quick)),
    ]
    if not args.quick:
        workloads.insert(0, ("demo_reviews (630 reviews, 9-23 tokens)", demo_reviews()))
        # The first training in a process pays one-time costs (oneDNN's fp32 and bf16 kernels, lazy imports): both
        # sides run once untimed on a few texts, so that no table's first row (the anchor) carries them. Without this,
        # the anchor ran at 30 samples/s first and 46 last in one process on the demo reviews.
        warm_up = varied_lengths(os.path.join(args.work_dir, "warm-up"), num_train=32, num_test=10)
        book_recipe(args.model, list(load_labeled_data(warm_up, args.seed)["train"]["text"]), args, next(folder))
        project(args.model, warm_up, args, next(folder), "warm-up", "")
    for caption, data_args in workloads:
        # The masked-LM phase reads the whole training split's text, as the project side does.
        splits = load_labeled_data(replace(data_args, samples_per_label=None), args.seed)
        held_out = list(splits["validation"]["text"])
        rows = []
        anchor, model = book_recipe(args.model, list(splits["train"]["text"]), args, next(folder))
        rows.append((anchor, model))
        rows.append(project(args.model, data_args, args, next(folder), "mlm phase defaults",
                            "masked positions only, group_by_length, bf16"))  # fmt: skip
        if not args.quick and caption.startswith("varied"):
            rows.append(project(args.model, data_args, args, next(folder), "fp32", "masked positions only, "
                                "group_by_length, fp32", bf16=False))  # fmt: skip
        for figures, model in rows:
            figures.f1_macro = held_out_perplexity(model, tokenizer, held_out, args.seed)
        section.table(caption, [figures for figures, _ in rows], "held-out perplexity")
    section.write()


if __name__ == "__main__":
    main()
