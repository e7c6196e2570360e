"""Exactness against ppuda's recorded outputs: every case JSON in the reference directory.

New case files are picked up without code changes. Tolerances follow the issue: sums, abs-sums
and norms to 1e-4 relative, listed values to 1e-5 absolute. A sum is compared relative to the
tensor's abs-sum: float32 rounding moves a sum by about eps * abs-sum, so a sum that cancels to
near zero has no relative precision of its own.
"""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from ghn import adjust_for_small_images, embed_nodes, load_ghn, predict_parameters

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture
def case(case_file, reference_dir):
    if case_file is None:
        pytest.skip(f"no case*.json in {reference_dir}")
    case = json.loads(case_file.read_text())
    torch.manual_seed(case["seeds"]["model_construction"])
    model = torchvision.models.get_model(case["model"], **case["constructor_kwargs"])
    if case["adjust_32"]:
        adjust_for_small_images(model)
    ghn = load_ghn(reference_dir / case["ghn_checkpoint"])
    return case, model, ghn


def test_graph_matches_ppuda(case):
    case, model, ghn = case
    pred = predict_parameters(model, ghn, predict_classifier=case["predict_class_layers"],
                              bn_train=case["bn_train"])
    graph, ref = pred.graph, case["graph"]
    assert graph.n_nodes == ref["n_nodes"]
    assert graph.names == ref["node_names"]
    assert graph.ops == ref["node_ops"]
    assert [list(s) if s else None for s in graph.shapes] == ref["node_shapes"]
    assert [list(ghn.vocab.encode(s)) for s in graph.shapes] == ref["shape_ind"]
    assert [list(e) for e in graph.edges_1hop()] == ref["edges_1hop"]
    assert len(graph.edges) == ref["n_edges_total"]
    assert int(graph.edges[:, 2].max()) == ref["max_dist"]


def test_embeddings_match_ppuda(case):
    case, model, ghn = case
    pred = predict_parameters(model, ghn, predict_classifier=case["predict_class_layers"])
    with torch.no_grad():
        y = embed_nodes(ghn, pred.graph)
    ref = case["embeddings"]
    f64 = torch.float64
    torch.testing.assert_close(y.norm(dim=1).double(), torch.tensor(ref["final_norm"], dtype=f64),
                               rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(y[:, :4].double(), torch.tensor(ref["final_first4"], dtype=f64),
                               rtol=0, atol=1e-4)


def test_parameters_match_ppuda(case):
    case, model, ghn = case
    pred = predict_parameters(model, ghn, predict_classifier=case["predict_class_layers"],
                              bn_train=case["bn_train"])
    params = dict(model.named_parameters())
    # `predicted` records every parameter's final statistics; the unpredicted ones keep the
    # model's seeded initialisation, so they must match too.
    unpredicted = set(case["not_predicted"]) | set(case["removed_params"])
    assert set(pred.predicted) == set(case["predicted"]) - unpredicted
    for name, ref in case["predicted"].items():
        x = params[name].detach().double()
        assert list(x.shape) == ref["shape"], name
        assert x.abs().sum().item() == pytest.approx(ref["abs_sum"], rel=RTOL), name
        assert x.norm().item() == pytest.approx(ref["norm"], rel=RTOL), name
        assert abs(x.sum().item() - ref["sum"]) <= RTOL * ref["abs_sum"], name
        flat = x.flatten()
        torch.testing.assert_close(flat[:8], torch.tensor(ref["first"], dtype=torch.float64)[:8],
                                   rtol=0, atol=ATOL, msg=name)
        torch.testing.assert_close(flat[-4:], torch.tensor(ref["last"], dtype=torch.float64),
                                   rtol=0, atol=ATOL, msg=name)


def test_unpredicted_parameters_are_kept(case):
    """ppuda's `not_predicted` plus the `removed_params` it deletes; we keep the latter."""
    case, model, ghn = case
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pred = predict_parameters(model, ghn, predict_classifier=case["predict_class_layers"])
    assert set(pred.not_predicted) == set(case["not_predicted"]) | set(case["removed_params"])
    params = dict(model.named_parameters())
    assert set(params) == set(before)  # nothing removed or set to None
    for name in pred.not_predicted:
        assert torch.equal(params[name], before[name]), name


def test_no_side_effects_on_buffers_mode_or_rng(case):
    """A deliberate difference: ppuda's tracing pass rewrites BatchNorm statistics (`buffers`
    in the JSON) and draws from the global RNG; our graph construction does neither."""
    case, model, ghn = case
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    training = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    predict_parameters(model, ghn, predict_classifier=case["predict_class_layers"])
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == training
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    stats = [n for n in case["buffers"] if n.endswith("running_var")]
    if stats:  # ppuda's traced statistics are not the fresh (all-ones) ones we keep
        ours = dict(model.named_buffers())[stats[0]].double().sum().item()
        assert case["buffers"][stats[0]]["sum"] != pytest.approx(ours, rel=1e-6)


def test_total_norm_matches(case):
    case, model, ghn = case
    predict_parameters(model, ghn, predict_classifier=case["predict_class_layers"])
    total = torch.stack([p.detach().double().norm() for p in model.parameters()]).norm()
    assert total.item() == pytest.approx(case["total_norm"], rel=RTOL)
