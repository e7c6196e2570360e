"""Properties of apply_postproc on small models; no GHN needed."""

import copy
import logging

import pytest
import torch
from torch import nn

from postproc import PostProcConfig, _apply, apply_postproc, corr_std, list_layers


def _net() -> nn.Module:
    """Five 2-D layers as (out, rest): (64,27) plain, (32,576) transposed, (128,32) plain,
    (96,128) transposed, classifier (10,96). A BN and biases that must never change."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3),
        nn.BatchNorm2d(64),
        nn.Conv2d(64, 32, 3, bias=False),
        nn.Conv2d(32, 128, 1),
        nn.Flatten(),
        nn.Linear(128, 96),
        nn.Linear(96, 10),
    )


def _mat(weight: torch.Tensor) -> torch.Tensor:
    mat = weight.detach().reshape(weight.shape[0], -1)
    return mat.t() if mat.shape[0] < mat.shape[1] else mat


def _changed(before: dict, model: nn.Module) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def test_list_layers_counts_2d_weights_once() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), shared, shared, nn.Conv1d(4, 2, 1))
    assert [name for name, _ in list_layers(model)] == ["0", "2", "4"]
    assert [name for name, _ in list_layers(_net())] == ["0", "2", "3", "5", "6"]


def test_orth_gives_orthonormal_columns() -> None:
    model = _net()
    reports = apply_postproc(model, PostProcConfig(orth=True, beta=1e-5), seed=0)
    assert [r.index for r in reports] == [1, 2, 3, 4]  # the last layer is skipped
    assert [r.transposed for r in reports] == [False, True, False, True]
    for report, (_, module) in zip(reports, list_layers(model)):
        q = _mat(module.weight).double()
        eye = torch.eye(q.shape[1], dtype=torch.float64)
        assert (q.t() @ q - eye).abs().max() < 1e-5, report
        assert report.orthogonalised


def test_orth_matches_qr_with_sign_correction() -> None:
    model = _net()
    weight = model[3].weight.detach().clone()
    apply_postproc(model, PostProcConfig(orth=True), seed=0)
    q, r = torch.linalg.qr(weight.reshape(128, 32))
    q = q * torch.sign(torch.diagonal(r))
    torch.testing.assert_close(model[3].weight.reshape(128, 32), q)
    assert (torch.diagonal(_mat(model[3].weight).t() @ weight.reshape(128, 32)) > 0).all()


def test_noise_std_matches_beta_times_corr_std() -> None:
    model = _net()
    before = {n: m.weight.detach().clone() for n, m in list_layers(model)}
    beta = 1e-3
    reports = apply_postproc(model, PostProcConfig(beta=beta), seed=3)
    for report, (name, module) in zip(reports, list_layers(model)):
        expected = torch.corrcoef(_mat(before[name])).flatten().std().item()
        assert report.corr_std == pytest.approx(expected, rel=1e-6)
        assert report.noise_std == pytest.approx(beta * expected, rel=1e-6)
        delta = module.weight.detach() - before[name]
        n = delta.numel()
        # the sample std of n normal draws has relative sd ~ 1/sqrt(2n): allow 5 of them
        assert delta.std().item() / report.noise_std == pytest.approx(1, abs=5 / (2 * n) ** 0.5)
        assert abs(delta.mean().item()) < 5 * report.noise_std / n**0.5


def test_layer_selection_leaves_the_rest_untouched() -> None:
    model = _net()
    before = copy.deepcopy(model.state_dict())
    reports = apply_postproc(model, PostProcConfig(beta=1e-4, orth=True, layer=3), seed=0)
    assert [r.index for r in reports] == [3, 4]
    # layers 1-2 (before `layer`), the classifier, BN params/buffers and all biases unchanged
    assert _changed(before, model) == {"3.weight", "5.weight"}


def test_max_sz_skips_small_layers_and_slices_the_noise() -> None:
    model = _net()
    before = copy.deepcopy(model.state_dict())
    reports = apply_postproc(model, PostProcConfig(beta=1e-3, max_sz=64), seed=0)
    # max(out, in): 64 (skipped), 64 (skipped), 128, 128; classifier skipped anyway
    assert [r.index for r in reports] == [3, 4]
    # layer 3 is (128, 32): W[64:, 64:] is empty, so like ppuda it gets no noise at all
    assert _changed(before, model) == {"5.weight"}
    new, old = model.state_dict()["5.weight"], before["5.weight"]
    assert torch.equal(new[:64], old[:64]) and torch.equal(new[:, :64], old[:, :64])
    assert (new[64:, 64:] != old[64:, 64:]).all()


def test_seed_is_reproducible_and_leaves_global_rng_alone() -> None:
    cfg = PostProcConfig(beta=1e-3, orth=True)
    a, b, c = _net(), _net(), _net()
    state = torch.get_rng_state()
    apply_postproc(a, cfg, seed=7)
    apply_postproc(b, cfg, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    apply_postproc(c, cfg, seed=8)
    for (_, ma), (_, mb) in zip(list_layers(a), list_layers(b)):
        assert torch.equal(ma.weight, mb.weight)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_seed_generator_and_global_rng_agree_on_cpu() -> None:
    """seed=s draws the same CPU stream as torch.manual_seed(s) + randn_like (ppuda's way),
    which is what lets seed=0 reproduce the reference's seeded results."""
    cfg = PostProcConfig(beta=1e-3)
    a, b, c = _net(), _net(), _net()
    apply_postproc(a, cfg, seed=5)
    apply_postproc(b, cfg, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(5)
    apply_postproc(c, cfg)
    for (_, ma), (_, mb), (_, mc) in zip(list_layers(a), list_layers(b), list_layers(c)):
        assert torch.equal(ma.weight, mb.weight) and torch.equal(ma.weight, mc.weight)


def test_float64_weights_stay_float64() -> None:
    model = _net().double()
    apply_postproc(model, PostProcConfig(beta=1e-3, orth=True), seed=0)
    assert model[0].weight.dtype == torch.float64
    q = _mat(model[0].weight)
    assert (q.t() @ q - torch.eye(27, dtype=torch.float64)).abs().max() < 1e-10


def test_disabled_config_changes_nothing() -> None:
    model = _net()
    before = copy.deepcopy(model.state_dict())
    assert apply_postproc(model, PostProcConfig(), seed=0) == []
    assert not _changed(before, model)


def test_layer_beyond_model_raises() -> None:
    with pytest.raises(ValueError, match=r"layer=6 .*5 2-D layers \(L=5\)"):
        apply_postproc(_net(), PostProcConfig(orth=True, layer=6))


def test_layer_equal_to_l_warns_and_does_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="postproc"):
        assert apply_postproc(_net(), PostProcConfig(orth=True, layer=5)) == []
    assert "always skipped" in caplog.text


def test_seed_and_generator_together_raise() -> None:
    with pytest.raises(ValueError, match="not both"):
        apply_postproc(_net(), PostProcConfig(beta=1.0), seed=0, generator=torch.Generator())


def test_constant_filter_makes_noise_undefined() -> None:
    model = _net()
    with torch.no_grad():
        model[3].weight[5] = 1.0  # zero variance -> corrcoef row of NaN
    with pytest.raises(ValueError, match=r"layer 3 \(3, weight \(128, 32, 1, 1\)\)"):
        apply_postproc(model, PostProcConfig(beta=1e-5), seed=0)


@pytest.mark.parametrize("shape", [(300, 40), (40, 300), (64, 64), (2, 5)])
@pytest.mark.parametrize("block", [1 << 22, 7], ids=["one-block", "many-blocks"])
def test_corr_std_is_the_std_of_corrcoef(shape, block, monkeypatch) -> None:
    monkeypatch.setattr(_apply, "_BLOCK_ELEMENTS", block)
    gen = torch.Generator().manual_seed(0)
    mat = torch.randn(*shape, generator=gen) + torch.randn(1, shape[1], generator=gen)
    got = corr_std(mat)
    assert got.dtype == torch.float32
    want = torch.corrcoef(mat.double()).flatten().std()
    assert got.item() == pytest.approx(want.item(), rel=1e-6, nan_ok=True)


def test_corr_std_is_nan_where_a_row_is_constant() -> None:
    mat = torch.randn(50, 8)
    mat[3] = 2.0
    assert torch.isnan(torch.corrcoef(mat)).any() and torch.isnan(corr_std(mat))
