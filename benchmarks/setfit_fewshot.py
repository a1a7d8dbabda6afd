"""setfit_fewshot against setfit as the book calls it, side by side on the same 16 examples per label.

The anchor is setfit's Trainer with the book's arguments (16 per label, 20 pair iterations, 3 epochs; setfit's
defaults otherwise: CosineSimilarityLoss, batches of 16 pairs, fp32, logistic-regression head). The project side
is trainers/setfit_fewshot.py's main() with its defaults. Both stop after the same number of pair batches
(--max_steps) so that `make bench` fits its time; samples/s counts sentence pairs over the whole training
(body and head). Then one setting at a time.

    python benchmarks/setfit_fewshot.py [--quick] [--max_steps N] [--threads N]
"""

import os
import sys
import time

import setfit
from _harness import Figures, Section, load_trainer, parse_args
from _workloads import demo_reviews
from setfit import SetFitModel

from shared.data import label_names, load_labeled_data
from shared.metrics import summary_metrics


def setfit_as_the_book_calls_it(model_path: str, data_args, args, output_dir: str, name: str, note: str) -> Figures:
    splits = load_labeled_data(data_args, args.seed)
    names = label_names(splits)
    model = SetFitModel.from_pretrained(model_path, labels=names)
    training_args = setfit.TrainingArguments(
        output_dir=output_dir, num_epochs=3, num_iterations=args.num_iterations, max_steps=args.max_steps,
        seed=args.seed, report_to="none", save_strategy="no",
    )  # fmt: skip
    trainer = setfit.Trainer(model=model, args=training_args, train_dataset=splits["train"])
    start = time.perf_counter()
    trainer.train()
    runtime = time.perf_counter() - start
    pairs = load_trainer("setfit_fewshot").pairs_seen(trainer)
    predictions = model.predict_proba(list(splits["test"]["text"]), as_numpy=True).argmax(-1)
    scores = summary_metrics(list(splits["test"]["label"]), predictions, len(names))
    return Figures(name, pairs / runtime, scores["f1_macro"], scores["accuracy"], runtime, note)


def project(model_path: str, data_args, args, output_dir: str, name: str, note: str, **settings) -> Figures:
    """trainers/setfit_fewshot.py's main() with its defaults, but `settings`."""
    trainer = load_trainer("setfit_fewshot")
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION")
    try:
        training_args = trainer.SetFitTrainingArguments(
            output_dir=output_dir, seed=args.seed, max_steps=args.max_steps, **settings
        )
        results = trainer.main(
            trainer.SetFitModelArguments(model_path),
            data_args,
            trainer.SetFitArguments(num_iterations=args.num_iterations),
            training_args,
        )
    finally:  # main() sets it for --bf16; the next run in this process must not inherit it
        os.environ.pop("ACCELERATE_MIXED_PRECISION", None)
        if precision is not None:
            os.environ["ACCELERATE_MIXED_PRECISION"] = precision
    m = results["metrics"]
    return Figures(name, results["train_samples_per_second"], m["f1_macro"], m["accuracy"], results["train_runtime_s"],
                   note)  # fmt: skip


def main():
    sys.argv, extra = [a for a in sys.argv if not a.startswith("--max_steps")], sys.argv
    args = parse_args(__doc__)
    args.max_steps = next(
        (int(a.split("=")[1]) for a in extra if a.startswith("--max_steps=")), 4 if args.quick else 40
    )
    args.num_iterations = 1 if args.quick else 20
    section = Section(
        "setfit_fewshot",
        "Training: setfit_fewshot against setfit as the book calls it",
        args,
        f"Anchor: `setfit.Trainer` with the book's arguments (16 examples per label, {args.num_iterations} pair "
        "iterations, 3 epochs, setfit's defaults otherwise: CosineSimilarityLoss, 16 pairs a batch, fp32). Project: "
        "`trainers/setfit_fewshot.py` main() with its defaults (each distinct text of a batch encoded once, bf16 "
        f"where the hardware has it). Both sides stop after {args.max_steps} batches of pairs, so `make bench` "
        "fits its time; samples/s: sentence pairs over the whole training (body, then the logistic head). Macro F1 "
        "and accuracy on the test split.",
    )
    data_args = demo_reviews(samples_per_label=16)
    folder = iter(os.path.join(args.work_dir, f"run{i}") for i in range(100))
    if not args.quick:
        # The first training in a process pays one-time costs (oneDNN's fp32 and bf16 kernels, lazy imports): both
        # sides run once untimed on a few texts, so that no table's first row (the anchor) carries them. Without this,
        # the anchor ran at 30 samples/s first and 46 last in one process on the demo reviews.
        measured_steps, args.max_steps = args.max_steps, 2
        setfit_as_the_book_calls_it(args.model, data_args, args, next(folder), "warm-up", "")
        project(args.model, data_args, args, next(folder), "warm-up", "")
        args.max_steps = measured_steps
    anchor = setfit_as_the_book_calls_it(args.model, data_args, args, next(folder), "setfit as the book calls it",
                                         "CosineSimilarityLoss, fp32")  # fmt: skip
    ours = project(args.model, data_args, args, next(folder), "setfit_fewshot defaults", "distinct texts, bf16")
    section.table("demo_reviews, 16 per label", [anchor, ours], "macro F1")
    distinct = project(args.model, data_args, args, next(folder), "distinct texts only", "distinct texts, fp32",
                       bf16=False)  # fmt: skip
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16"  # what the project's --bf16 does to setfit's Trainer
    try:
        bf16 = setfit_as_the_book_calls_it(args.model, data_args, args, next(folder), "bf16 only",
                                           "CosineSimilarityLoss, bf16")  # fmt: skip
    finally:
        os.environ.pop("ACCELERATE_MIXED_PRECISION")
    section.table("demo_reviews, 16 per label: one setting at a time", [anchor, distinct, bf16, ours], "macro F1")
    section.write()


if __name__ == "__main__":
    main()
