"""Build train.csv and test.csv from raw/positive.txt and raw/negative.txt: a seeded, stratified split.

python data/demo_reviews/build_splits.py
"""

import csv
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_PER_LABEL = 100
SEED = 13


def main() -> None:
    rng = random.Random(SEED)
    train, test = [], []
    for label in ("negative", "positive"):
        with open(os.path.join(HERE, "raw", f"{label}.txt")) as f:
            texts = [line.strip() for line in f if line.strip()]
        rng.shuffle(texts)
        test += [(text, label) for text in texts[:TEST_PER_LABEL]]
        train += [(text, label) for text in texts[TEST_PER_LABEL:]]
    for name, rows in (("train", train), ("test", test)):
        rng.shuffle(rows)
        with open(os.path.join(HERE, f"{name}.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        print(f"{name}.csv: {len(rows)} rows")


if __name__ == "__main__":
    main()
