"""Tiny, offline stand-ins for real encoders and datasets: random weights, a vocabulary of a few dozen words.

Each family gets its own tokenizer type and config, so the trainers meet the same differences (token type ids
or not, padding ids, relative attention) that they would meet with the real checkpoints.
"""

import csv
import json
import os
import random
import shutil

import pandas as pd
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertTokenizer,
    DebertaV2Config,
    DebertaV2ForMaskedLM,
    DebertaV2Tokenizer,
    DistilBertConfig,
    DistilBertForMaskedLM,
    DistilBertTokenizer,
    MPNetConfig,
    MPNetForMaskedLM,
    MPNetTokenizer,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaTokenizer,
)

from shared.args import DataArguments
from shared.data import load_labeled_data

POSITIVE = ["great", "wonderful", "loved", "brilliant", "moving", "fun", "superb", "charming"]
NEGATIVE = ["awful", "boring", "hated", "dull", "terrible", "messy", "weak", "tedious"]
FILLER = ["the", "movie", "film", "plot", "acting", "was", "really", "a", "and", "story", "cast", "so", "it"]
WORDS = POSITIVE + NEGATIVE + FILLER
FAMILIES = ["bert", "roberta", "distilbert", "mpnet", "deberta-v2"]
MAX_LENGTH = 64
SIZE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}


def build_tiny_encoder(family: str, path: str) -> str:
    """Save a random masked-LM encoder of `family` with its tokenizer to `path`; a classifier loads from it
    with a new head, as it would from a real pretrained checkpoint."""
    torch.manual_seed(0)  # the same weights whichever tests ran before
    tokenizer = _tokenizer(family)
    tokenizer.model_max_length = MAX_LENGTH
    vocab_size = len(tokenizer)
    special = {"pad_token_id": tokenizer.pad_token_id}
    if family == "bert":
        config = BertConfig(vocab_size=vocab_size, max_position_embeddings=MAX_LENGTH, **SIZE, **special)
        model = BertForMaskedLM(config)
    elif family == "roberta":
        config = RobertaConfig(vocab_size=vocab_size, max_position_embeddings=MAX_LENGTH + 2, **SIZE, **special)
        model = RobertaForMaskedLM(config)
    elif family == "distilbert":
        config = DistilBertConfig(
            vocab_size=vocab_size, max_position_embeddings=MAX_LENGTH, dim=32, n_layers=2, n_heads=2, hidden_dim=37
        )
        model = DistilBertForMaskedLM(config)
    elif family == "mpnet":
        model = MPNetForMaskedLM(MPNetConfig(vocab_size=vocab_size, max_position_embeddings=MAX_LENGTH + 2, **SIZE))
    elif family == "deberta-v2":
        config = DebertaV2Config(
            vocab_size=vocab_size,
            max_position_embeddings=MAX_LENGTH,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            **SIZE,
            **special,
        )
        model = DebertaV2ForMaskedLM(config)
    else:
        raise ValueError(family)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_sentence_transformer(encoder_path: str, path: str) -> str:
    """A sentence-transformers model (the encoder with mean pooling) saved to `path`: SetFit's starting point."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    encoder = Transformer(encoder_path, max_seq_length=MAX_LENGTH)
    pooling = Pooling(encoder.get_embedding_dimension(), "mean")
    SentenceTransformer(modules=[encoder, pooling]).save(path)
    return path


def _tokenizer(family: str):
    if family in ("bert", "distilbert"):
        cls = BertTokenizer if family == "bert" else DistilBertTokenizer
        return cls(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])})
    if family == "mpnet":
        return MPNetTokenizer(vocab={t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "[UNK]", "<mask>", *WORDS])})
    if family == "roberta":
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
        for token in [f"Ġ{w}" for w in WORDS] + list("abcdefghijklmnopqrstuvwxyzĠ.,!'"):
            vocab.setdefault(token, len(vocab))
        return RobertaTokenizer(vocab=vocab, merges=[])
    if family == "deberta-v2":
        pieces = [(t, 0.0) for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]]
        return DebertaV2Tokenizer(vocab=pieces + [(f"▁{w}", -1.0) for w in WORDS])
    raise ValueError(family)


def review(rng: random.Random, positive: bool) -> str:
    """A short review whose sentiment shows in two of its words."""
    words = rng.sample(FILLER, 5) + rng.sample(POSITIVE if positive else NEGATIVE, 2)
    rng.shuffle(words)
    return " ".join(words)


def write_reviews_csv(path: str, n: int, seed: int, label_names=("negative", "positive")) -> str:
    """`n` balanced reviews with string labels, columns `review` and `sentiment` (not the default names, so
    tests exercise the column mapping)."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment", "source"])
        for i in range(n):
            positive = i % 2 == 1
            writer.writerow([review(rng, positive), label_names[int(positive)], "tiny"])
    return path


def write_imbalanced_reviews_csv(path: str, n: int, seed: int, minority_every: int = 10) -> str:
    """`n` reviews where one in `minority_every` is positive (9:1 by default), columns as write_reviews_csv's."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment", "source"])
        for i in range(n):
            positive = i % minority_every == minority_every - 1
            writer.writerow([review(rng, positive), "positive" if positive else "negative", "tiny"])
    return path


# Multi-label tags of a tiny review, each shown by its own words: praise and complaint by sentiment words, acting
# by the words about the cast.
TAGS = {"praise": POSITIVE, "complaint": NEGATIVE, "acting": ["acting", "cast"]}


def tagged_review(rng: random.Random) -> tuple[str, list[str]]:
    """A short review and its tags (one or more of TAGS), each tag's words in the text."""
    tags = [tag for tag in TAGS if rng.random() < 0.5] or [rng.choice(list(TAGS))]
    words = rng.sample([w for w in FILLER if w not in TAGS["acting"]], 4)
    for tag in tags:
        words += rng.sample(TAGS[tag], 2)
    rng.shuffle(words)
    return " ".join(words), tags


def write_tagged_reviews_csv(path: str, n: int, seed: int, delimiter: str = ";") -> str:
    """`n` multi-label reviews, columns `review` and `tags` (the tags joined by `delimiter`)."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "tags"])
        for _ in range(n):
            text, tags = tagged_review(rng)
            writer.writerow([text, delimiter.join(tags)])
    return path


def write_rows(folder, name: str, rows: list[dict]) -> str:
    """`rows` as the file `name` in `folder` (a pathlib.Path), in the format its suffix names: csv, jsonl or json."""
    path = folder / name
    if name.endswith(".csv"):
        pd.DataFrame(rows).to_csv(path, index=False)
    elif name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif name.endswith(".json"):
        path.write_text(json.dumps(rows))
    return str(path)


def load_rows(folder, train, validation=None, test=None, suffix=".csv", **kwargs):
    """The splits that shared.data makes of these rows, written as files the way a user gives them."""
    args = DataArguments(
        train_file=write_rows(folder, "train" + suffix, train),
        validation_file=write_rows(folder, "validation" + suffix, validation) if validation else None,
        test_file=write_rows(folder, "test" + suffix, test) if test else None,
        **kwargs,
    )
    return load_labeled_data(args, seed=0)


def damaged_copy(source: str, folder, damage: str) -> str:
    """A copy of a trained model folder with one thing wrong, as a failed download or a hand edit leaves it."""
    shutil.copytree(source, folder)
    if damage == "truncated weights":
        with open(os.path.join(source, "model.safetensors"), "rb") as f:
            (folder / "model.safetensors").write_bytes(f.read(2000))
    elif damage == "labels that the head does not have":
        config = json.loads((folder / "config.json").read_text())
        config["id2label"] = {"0": "a", "1": "b", "2": "c"}
        config["label2id"] = {"a": 0, "b": 1, "c": 2}
        (folder / "config.json").write_text(json.dumps(config))
    elif damage == "no tokenizer files":
        for name in os.listdir(folder):
            if name.startswith(("tokenizer", "vocab", "special_tokens")):
                os.remove(folder / name)
    elif damage == "truncated SetFit head":
        (folder / "model_head.safetensors").write_bytes((folder / "model_head.safetensors").read_bytes()[:100])
    elif damage == "no SetFit head":
        for name in ("model_head.safetensors", "model_head.pkl"):
            os.remove(folder / name)
    return str(folder)
