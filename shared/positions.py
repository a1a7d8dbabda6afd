"""How many tokens a model takes, by its tokenizer and its table of positions: one rule for training and serving."""

from transformers import PretrainedConfig, PreTrainedTokenizerBase

# Model types whose position ids start after the padding index.
OFFSET_POSITION_MODELS = {"roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "data2vec-text", "xmod"}


def longest_input(tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> int:
    """The tokenizer's model_max_length, unless the model's position table allows fewer. A tokenizer saved without a
    limit (many older ones on the Hub) reports a huge model_max_length; the positions are the truth, and a longer
    input fails inside the model."""
    limits = [tokenizer.model_max_length]
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        # RoBERTa-style models number positions from padding_idx + 1, so that many fewer are usable.
        offset = config.pad_token_id + 1 if config.model_type in OFFSET_POSITION_MODELS else 0
        limits.append(positions - offset)
    return min(limits)
