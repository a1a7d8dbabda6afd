"""What every training run needs, whichever trainer drives it."""

import os


def keep_logs_in(output_dir: str) -> None:
    """Send the TensorBoard event files of the next trainer built to output_dir/runs.

    transformers 5 dropped TrainingArguments.logging_dir; its TensorBoard callback writes to output_dir/runs while
    training, but to ./runs (wherever the user happens to be) for an evaluation logged before training starts or
    after it ends. The callback reads this variable when it is created, so it is set before each trainer is built.
    """
    os.environ["TENSORBOARD_LOGGING_DIR"] = os.path.join(os.path.abspath(output_dir), "runs")
