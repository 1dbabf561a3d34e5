"""What a trained ViT has learned, as numbers: the paper's Section 4.5 (Figures 6 and 7).

    from vitkit.inspect import attention_rollout, mean_attention_distance, position_embedding_similarity
    maps = attention_rollout(model, images)               # (B, gh, gw), Figure 6
    heads = class_token_attention(model, images)          # (B, layers, heads, gh, gw)
    distance = mean_attention_distance(model, images)     # (layers, heads), pixels, Figure 7 right
    similarity = position_embedding_similarity(model)     # (gh, gw, gh, gw), Figure 7 centre
    components, explained = filter_components(model, 28)  # (28, C, ph, pw), Figure 7 left

`vitkit.inspect.plots` draws each as a PNG (the `vitkit inspect` commands); nothing here imports matplotlib.
"""

from .attention import attention_rollout, capture_attention, class_token_attention, rollout, rollout_step
from .distance import attention_distance, mean_attention_distance, patch_centres, patch_distances
from .filters import filter_components, principal_components
from .images import find_images, image_batches, load_images
from .posemb import cosine_similarity_grid, patch_position_embeddings, position_embedding_similarity

__all__ = [
    "attention_rollout",
    "capture_attention",
    "class_token_attention",
    "rollout",
    "rollout_step",
    "attention_distance",
    "mean_attention_distance",
    "patch_centres",
    "patch_distances",
    "filter_components",
    "principal_components",
    "find_images",
    "image_batches",
    "load_images",
    "cosine_similarity_grid",
    "patch_position_embeddings",
    "position_embedding_similarity",
]
