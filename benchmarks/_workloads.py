"""The data every comparison trains on: the bundled reviews, and a set generated from them whose texts vary
widely in length, where padding waste shows.

Both come back as DataArguments, so the project side loads them through shared.data exactly as a user's run does
and the anchor side gets the very same splits from the same call.
"""

import csv
import math
import os
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.args import DataArguments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "data", "demo_reviews")


def demo_reviews(max_seq_length: int = 128, samples_per_label: int | None = None) -> "DataArguments":
    """data/demo_reviews as `make demo` trains on it: 630 training reviews of one or two sentences."""
    from shared.args import DataArguments  # here, not above: gpu.sh uses this module without the project's packages

    return DataArguments(
        train_file=os.path.join(DEMO, "train.csv"),
        test_file=os.path.join(DEMO, "test.csv"),
        max_seq_length=max_seq_length,
        samples_per_label=samples_per_label,
    )


def varied_lengths(
    folder: str,
    num_train: int,
    num_test: int = 200,
    max_reviews: int = 8,
    seed: int = 0,
    max_seq_length: int = 128,
    samples_per_label: int | None = None,
) -> "DataArguments":
    """Texts of 1 to `max_reviews` demo reviews of one label joined into one, the count drawn log-uniformly: many
    short texts and a long tail, from about 10 to about 15 * max_reviews tokens, as in real review data.

    Training texts are made only of the bundled training reviews and test texts only of the test reviews, so no
    sentence is in both. Deterministic: the same arguments write the same files."""
    from shared.args import DataArguments

    os.makedirs(folder, exist_ok=True)
    paths = {}
    for split, count in (("train", num_train), ("test", num_test)):
        paths[split] = os.path.join(folder, f"{split}.csv")
        with open(paths[split], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(varied_texts(split, count, max_reviews, seed))
    return DataArguments(
        train_file=paths["train"],
        test_file=paths["test"],
        max_seq_length=max_seq_length,
        samples_per_label=samples_per_label,
    )


def read_demo(split: str) -> list[tuple[str, str]]:
    """(text, label) rows of data/demo_reviews/<split>.csv."""
    with open(os.path.join(DEMO, f"{split}.csv"), newline="") as f:
        return [(row["text"], row["label"]) for row in csv.DictReader(f)]


def varied_texts(split: str, count: int, max_reviews: int = 8, seed: int = 0) -> list[tuple[str, str]]:
    """`count` (text, label) rows, each text 1 to `max_reviews` reviews of one label of the demo's `split` joined,
    the count drawn log-uniformly; labels take turns."""
    rows = read_demo(split)
    labels = sorted({label for _, label in rows})
    by_label = {label: [text for text, its in rows if its == label] for label in labels}
    rng = random.Random(f"{seed}-{split}")
    texts = []
    for i in range(count):
        label = labels[i % len(labels)]
        k = int(math.exp(rng.uniform(0, math.log(max_reviews + 1))))
        texts.append((" ".join(rng.sample(by_label[label], k)), label))
    return texts
