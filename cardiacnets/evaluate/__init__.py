"""Evaluation of trained models: ECG↔CMR retrieval, embedding export, projection plots.

`retrieval` holds the retrieval protocol and its metrics (pure numpy) and
`evaluate_retrieval`, which runs it on a trained alignment model over a
training-set split; `embeddings` embeds a split and saves/loads the embeddings;
`plots` draws the 2-D projection. The command line is ``cardiacnets evaluate``.
"""

from cardiacnets.evaluate.embeddings import SplitEmbeddings, embed_split, load_alignment_model, load_embeddings, save_embeddings
from cardiacnets.evaluate.plots import pca_2d, plot_projection
from cardiacnets.evaluate.retrieval import (
    chance_metrics,
    evaluate_retrieval,
    partner_rank_counts,
    rank_metrics,
    retrieval_metrics,
    sample_candidates,
)

__all__ = [
    "SplitEmbeddings",
    "chance_metrics",
    "embed_split",
    "evaluate_retrieval",
    "load_alignment_model",
    "load_embeddings",
    "pca_2d",
    "partner_rank_counts",
    "plot_projection",
    "rank_metrics",
    "retrieval_metrics",
    "sample_candidates",
    "save_embeddings",
]
