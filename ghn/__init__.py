"""GHN-2 and GHN-3 parameter prediction, compatible with the official checkpoints.

    from ghn import load_ghn, predict_parameters
    ghn = load_ghn("ghn2-imagenet")  # or "ghn3-xlm16", "ghn3-tm8", ...
    pred = predict_parameters(torchvision.models.resnet50(), ghn)
"""

from ghn._adjust import adjust_for_small_images
from ghn._checkpoint import CHECKPOINT_URLS, GHN2_SETTINGS, load_ghn, resolve_checkpoint
from ghn._checkpoint3 import save_ghn3
from ghn._files import CACHE_ENV, cache_dir, save_atomic
from ghn._ghn3 import GHN3, GHN3Config
from ghn._graph import PRIMITIVES, Graph, build_graph
from ghn._graph3 import Graph3, build_graph3
from ghn._model import GHN2, GHN2Config, as_ghn3_semantics
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
    "GHN3",
    "GHN3Config",
    "Graph",
    "Graph3",
    "PRIMITIVES",
    "Prediction",
    "adjust_for_small_images",
    "as_ghn3_semantics",
    "build_graph",
    "build_graph3",
    "cache_dir",
    "embed_nodes",
    "load_ghn",
    "predict_parameters",
    "predict_tensors",
    "predicted_names",
    "resolve_checkpoint",
    "save_atomic",
    "save_ghn3",
]
