"""GHN-2 parameter prediction, compatible with the official ppuda checkpoints.

    from ghn import load_ghn, predict_parameters
    ghn = load_ghn("ghn2-imagenet")
    pred = predict_parameters(torchvision.models.resnet50(), ghn)
"""

from ghn._adjust import adjust_for_small_images
from ghn._checkpoint import CHECKPOINT_URLS, cache_dir, load_ghn, resolve_checkpoint
from ghn._graph import PRIMITIVES, Graph, build_graph
from ghn._model import GHN2, GHN2Config
from ghn._predict import Prediction, embed_nodes, predict_parameters, predict_tensors

__all__ = [
    "CHECKPOINT_URLS",
    "GHN2",
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
    "resolve_checkpoint",
]
