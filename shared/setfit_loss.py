"""SetFit's contrastive loss, computed with each distinct text of a batch encoded once.

A few-shot set has few texts and setfit's pairs reuse them: a batch of 16 pairs drawn from 48 texts holds about
20 distinct texts in its 32 places, which sentence-transformers' CosineSimilarityLoss encodes place by place.
"""

import torch
from sentence_transformers.base.losses.merged_forward import merge_feature_batches
from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss


class DistinctTextsCosineSimilarityLoss(CosineSimilarityLoss):
    """CosineSimilarityLoss (setfit's default) that runs the body once per distinct text of the batch.

    The loss and its gradients are the same as the plain loss's (a text's gradient is the sum over its places;
    tests/test_benchmarks.py checks both); only dropout differs, drawn once per text instead of once per place.
    """

    def forward(self, sentence_features, labels):
        sentence_features = list(sentence_features)
        merged = merge_feature_batches(sentence_features)  # the columns padded to one width and stacked
        if merged is None:  # columns that cannot be stacked: encode each, as the plain loss does
            return super().forward(sentence_features, labels)
        places = merged["input_ids"].shape[0]
        _, text_of_place = torch.unique(merged["input_ids"], dim=0, return_inverse=True)
        # The first place of each distinct text stands for it.
        first_place = torch.full((int(text_of_place.max()) + 1,), places, device=text_of_place.device)
        first_place = first_place.scatter_reduce(
            0, text_of_place, torch.arange(places, device=text_of_place.device), "amin"
        )
        distinct = {
            key: value[first_place] if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == places
            else value
            for key, value in merged.items()
        }  # fmt: skip
        embeddings = self.model(distinct)["sentence_embedding"][text_of_place]
        return self.compute_loss_from_embeddings(list(embeddings.chunk(len(sentence_features))), labels)
