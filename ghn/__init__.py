"""GHN-2 parameter prediction, compatible with the official ppuda checkpoints.

    from ghn import load_ghn, predict_parameters
    ghn = load_ghn("ghn2-imagenet")
    pred = predict_parameters(torchvision.models.resnet50(), ghn)
"""

from ghn._adjust import adjust_for_small_images
from ghn._checkpoint import CHECKPOINT_URLS, GHN2_SETTINGS, load_ghn, resolve_checkpoint
from ghn._files import CACHE_ENV, cache_dir, save_atomic
from ghn._graph import PRIMITIVES, Graph, build_graph
from ghn._model import GHN2, GHN2Config
from ghn._predict import (
    Prediction,
    embed_nodes,
    predict_parameters,
    predict_tensors,
    predicted_names,
)

__all__ = [
    "CACHE_ENV",
    "CHECKPOINT_URLS",
    "GHN2",
    "GHN2_SETTINGS",
    "GHN2Config",
    "Graph",
    "PRIMITIVES",
    "Prediction",
    "adjust_for_small_images",
    "build_graph",
    "cache_dir",
    "embed_nodes",
    "load_ghn",
    "predict_parameters",
    "predict_tensors",
    "predicted_names",
    "resolve_checkpoint",
    "save_atomic",
]
