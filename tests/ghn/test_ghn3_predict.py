"""GHN-3 where we deliberately differ from the original code, and the CLI/verify mechanics."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from ghn import GHN3, GHN3Config, build_graph3, load_ghn, predict_parameters
from ghn._graph3 import distances
from ghn._verify import PUBLISHED_NORMS, verify


def _edges(graph) -> set[tuple[int, int]]:
    return set(graph.edges_1hop())


def _small_ghn3() -> GHN3:
    torch.manual_seed(0)
    return GHN3(GHN3Config(hid=16, heads=2, layers=1, max_shape=(16, 16, 16, 16)))


def test_squeezenet_pool_moves_with_its_edges():
    """GHN-3 moves SqueezeNet's final pooling label before the classifier conv but leaves the
    adjacency as it was, so labels and edges disagree; we move the node with its edges."""
    graph = build_graph3(torchvision.models.squeezenet1_0())
    n = graph.n_nodes
    assert graph.names[-3].startswith("Mean")
    assert graph.names[-2:] == ["classifier.1.weight", "classifier.1.bias"]
    assert graph.classifier == (n - 2, n - 1)
    edges = _edges(graph)
    assert (n - 2, n - 1) in edges  # weight -> bias, as for every conv
    assert (n - 1, n - 3) in edges  # the pooling reads the classifier's output
    assert graph.names[min(u for u, v in edges if v == n - 2)].startswith("Cat")


def test_swin_v2_graph_has_no_cycle_and_a_classifier():
    """GHN-3's Swin fix makes 2-cycles in Swin-V2 (norm after reduction), silently skips the
    topological sort and loses the classifier roles; we skip the redirect that would close a
    cycle, so the graph sorts and head.weight/head.bias are the classifier."""
    graph = build_graph3(torchvision.models.swin_v2_t())
    n = graph.n_nodes
    assert graph.is_sorted
    assert graph.names[-2:] == ["head.weight", "head.bias"]
    assert graph.classifier == (n - 2, n - 1)
    edges = _edges(graph)
    assert all((v, u) not in edges for u, v in edges)
    assert all(u < v for u, v in edges)  # topological order


def test_maxvit_classifier_is_connected_and_decoded_as_classifier():
    """MaxViT's last Linear has no bias; in GHN-3 its weight is left with no edges and the
    classifier decoders go to the 512x512 hidden Linear. We feed the weight its matmul's
    inputs and decode it with the classifier decoder."""
    model = torchvision.models.maxvit_t()
    graph = build_graph3(model)
    n = graph.n_nodes
    w = graph.names.index("classifier.5.weight")
    assert graph.classifier == (w, None) and w == n - 1
    assert graph.names[min(u for u, v in _edges(graph) if v == w)] == "classifier.3.bias"
    ghn = _small_ghn3()
    torch.manual_seed(0)
    pred = predict_parameters(model, ghn)
    assert "classifier.5.weight" in pred.predicted
    weight = model.classifier[5].weight.detach()
    head = ghn.decoder.class_layer_predictor[1]
    # rows repeat with the GHN's class count (1000 >= 1000 rows: no repeat), columns with M
    assert torch.equal(weight[:, :16], weight[:, 16:32])
    assert weight.shape == (1000, 512) and head.out_features == 1000


def test_distances_match_breadth_first_search():
    edges = [(0, 1), (1, 2), (2, 3), (0, 3), (3, 1)]  # a cycle 1 -> 2 -> 3 -> 1
    dist = distances(5, edges)
    assert dist.tolist() == [[0, 1, 2, 1, 0], [0, 0, 1, 2, 0], [0, 2, 0, 1, 0],
                             [0, 1, 2, 0, 0], [0, 0, 0, 0, 0]]
    chain = distances(60, [(i, i + 1) for i in range(59)])
    assert chain[0, 50] == 50 and chain[0, 51] == 0  # beyond 50 hops: unconnected


def test_predict_does_not_touch_rng_without_vit():
    """Only a ViT's class-token row draws from the global RNG (as in GHN-3)."""
    model, ghn = torchvision.models.resnet18(), _small_ghn3()
    state = torch.get_rng_state()
    predict_parameters(model, ghn)
    assert torch.equal(torch.get_rng_state(), state)


def test_verify_knows_published_ghn3_norms(ghn3_reference_dir):
    published = ghn3_reference_dir.parents[1] / "ghn2" / "published" / "ghn3_results.json"
    if not published.is_file():
        pytest.skip(f"published results not found at {published}")
    rows = {k: v for line in published.read_text().splitlines() if line.strip()
            for k, v in json.loads(line).items()}
    for name, column in [("ghn3-xlm16", "ghn3-paramnorm"), ("ghn3-tm8", "ghn3-t-paramnorm")]:
        for model, norm in PUBLISHED_NORMS[name].items():
            assert norm == float(rows[model][column]), (name, model)


def test_verify_mechanics_on_a_ghn3(ghn3_reference_dir):
    case = json.loads((ghn3_reference_dir / "case01_resnet18.json").read_text())
    ghn = load_ghn(ghn3_reference_dir / case["ghn_checkpoint"])
    [check] = verify(ghn, {"resnet18": case["total_norm"]}, rtol=1e-5)
    assert check.passed, str(check)
    [check] = verify(ghn, {"resnet18": case["total_norm"] * 1.001}, rtol=1e-5)
    assert not check.passed
