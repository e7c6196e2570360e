"""GHN-3 where we deliberately differ from the original code, and the CLI/verify mechanics."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from ghn import (
    GHN2,
    GHN3,
    GHN3Config,
    as_ghn3_semantics,
    build_graph3,
    embed_nodes,
    load_ghn,
    predict_parameters,
)
from ghn._checkpoint3 import save_official_format
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


@pytest.fixture(scope="module")
def ghn2_through_ghn3(ghn3_reference_dir):
    path = ghn3_reference_dir / "extra_ghn2ckpt_resnet18.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    case = json.loads(path.read_text())
    return case, (ghn3_reference_dir / case["ghn_checkpoint"]).resolve()


def test_ghn2_weights_with_ghn3_semantics_match_ghn3(ghn2_through_ghn3):
    case, checkpoint = ghn2_through_ghn3
    ghn = as_ghn3_semantics(load_ghn(checkpoint))
    assert ghn.checkpoint_id.endswith("+ghn3") and "semantics='ghn3'" in repr(ghn)
    torch.manual_seed(case["seeds"]["model_construction"])
    model = torchvision.models.get_model(case["model"])
    pred = predict_parameters(model, ghn)
    assert int((pred.graph.dist > 0).sum()) == case["graph_edges_total"]
    with torch.no_grad():
        y = embed_nodes(ghn, pred.graph)
    torch.testing.assert_close(y.norm(dim=1).double(),
                               torch.tensor(case["embeddings"]["final_norm"],
                                            dtype=torch.float64), rtol=1e-5, atol=1e-5)
    params = dict(model.named_parameters())
    assert set(pred.predicted) == set(case["predicted"])
    for name, ref in case["predicted"].items():
        x = params[name].detach().double()
        assert x.norm().item() == pytest.approx(ref["norm"], rel=1e-5), name
        assert abs(x.sum().item() - ref["sum"]) <= 1e-5 * ref["abs_sum"], name
    total = torch.stack([p.detach().double().norm() for p in model.parameters()]).norm()
    assert total.item() == pytest.approx(case["total_norm"], rel=1e-5)


def test_hub_pickled_ghn2_loads_with_ghn3_semantics(ghn2_through_ghn3, tmp_path):
    """GHN-3's repository also publishes GHN-2 weights in its pickle layout; GHN-3's code runs
    them with its own semantics, and so do we (2-D decoder tensors accepted)."""
    _, checkpoint = ghn2_through_ghn3
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    state = {k: (v.flatten(1) if k.startswith("decoder.") and v.dim() == 4 else v)
             for k, v in state.items()}
    save_official_format(state, tmp_path / "ghn2.pt")
    ghn = load_ghn(tmp_path / "ghn2.pt")
    assert isinstance(ghn, GHN2) and ghn.semantics == "ghn3"
    assert ghn.checkpoint_id.endswith("+ghn3")
    reference = as_ghn3_semantics(load_ghn(checkpoint))
    a, b = torchvision.models.resnet18(), torchvision.models.resnet18()
    predict_parameters(a, ghn)
    predict_parameters(b, reference)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
