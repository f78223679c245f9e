"""kdna.analysis.cka (the estimators), kdna.analysis.nulls (the null baselines) and the analysis
images of kdna.data.photos."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TinyNet, randomize
from torch import nn

from kdna.analysis import (
    Routing,
    block_permutation_test,
    capture_routing,
    cka_matrices,
    fixed_gates,
    hsic,
    kernel_similarity,
    label_permutation_test,
    linear_cka,
    random_kernel_similarity,
    random_weights,
)
from kdna.analysis.cka import CKAAccumulator, hsic_matrix


def _unbiased_hsic_reference(x: torch.Tensor, y: torch.Tensor) -> float:
    """Song et al. (2012), eq. 5, with explicit matrices."""
    k, l_ = x @ x.T, y @ y.T
    k.fill_diagonal_(0)
    l_.fill_diagonal_(0)
    n, one = k.shape[0], torch.ones(k.shape[0], 1, dtype=k.dtype)
    value = (torch.trace(k @ l_) + (one.T @ k @ one) * (one.T @ l_ @ one) / ((n - 1) * (n - 2))
             - 2 / (n - 2) * (one.T @ k @ l_ @ one))
    return float(value) / (n * (n - 3))


@pytest.mark.parametrize(("n", "p"), [(40, 3), (12, 50)])  # feature form, then Gram form
def test_unbiased_hsic_matches_its_definition_in_both_forms(n, p):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, p, generator=gen, dtype=torch.float64)
    y = torch.randn(n, 5, generator=gen, dtype=torch.float64) + x[:, :1]
    assert hsic(x, y) == pytest.approx(_unbiased_hsic_reference(x, y), rel=1e-9)
    assert hsic_matrix([x, y])[0, 1].item() == pytest.approx(hsic(x, y), rel=1e-9)
    assert hsic_matrix([x, y], debiased=False)[0, 1].item() == pytest.approx(
        hsic(x, y, debiased=False), rel=1e-9)


def test_debiased_cka_is_near_zero_for_independent_features_where_plain_is_near_one():
    gen = torch.Generator().manual_seed(0)
    debiased, plain = [], []
    for _ in range(8):  # n = 48, p = 4096: the regime of a small batch of images
        x = torch.randn(48, 4096, generator=gen, dtype=torch.float64)
        y = torch.randn(48, 4096, generator=gen, dtype=torch.float64)
        debiased.append(linear_cka(x, y))
        plain.append(linear_cka(x, y, debiased=False))
    assert abs(sum(debiased) / len(debiased)) < 0.05  # each draw has a spread of about 0.03
    assert max(abs(v) for v in debiased) < 0.15
    assert min(plain) > 0.95
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_accumulator_averages_minibatches_and_permuting_samples_destroys_similarity():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 20, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=torch.float64))
    y = 3 * x @ q  # a rotation and scaling of x: CKA 1
    same, null = CKAAccumulator(), CKAAccumulator()
    for part in range(4):
        rows = slice(64 * part, 64 * (part + 1))
        same.update([x[rows], y[rows]])
        null.update([x[rows], y[rows]], generator=gen)
    assert same.samples == 256
    assert same.compute()[0, 1].item() == pytest.approx(1.0, abs=1e-9)
    assert abs(null.compute()[0, 1].item()) < 0.05
    assert null.compute().diagonal().tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="at least 4 inputs"):
        same.update([x[:3], y[:3]])


def test_cka_matrices_give_both_estimators_and_their_permuted_nulls():
    torch.manual_seed(0)
    net, x = randomize(TinyNet()), torch.randn(16, 3, 12, 12)
    result = cka_matrices(net, x, batch_size=8, permuted_seed=0)
    assert set(result) == {"debiased", "plain", "debiased, permuted", "plain, permuted"}
    assert result["plain"].kind == "linear CKA"
    for sim in result.values():
        assert sim.names == ["stem", "block1.0", "conv2", "conv3"]
        torch.testing.assert_close(sim.matrix.diagonal(), torch.ones(4))
    off = ~torch.eye(4, dtype=torch.bool)
    assert result["debiased, permuted"].matrix[off].abs().mean() < \
        result["debiased"].matrix[off].abs().mean()


def test_random_weights_redraws_parameters_and_leaves_the_model_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    before = [p.clone() for p in net.parameters()]
    x = 5 + torch.randn(32, 3, 8, 8)
    clone = random_weights(net, x, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert not torch.equal(clone[0].weight, net[0].weight) and not clone.training
    torch.testing.assert_close(random_weights(net, x, seed=3)[0].weight, clone[0].weight)
    with torch.no_grad():  # statistics re-estimated on the inputs: the norm sees mean ~0
        out = clone[1](clone[0](x))
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert math.isclose(random_weights(net)[1].running_var.mean().item(), 1.0)


def test_random_kernels_keep_shapes_and_alignment_lifts_them_above_zero():
    net = nn.Sequential(nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 1), nn.Conv2d(16, 8, 1))
    plain, aligned = random_kernel_similarity(net), random_kernel_similarity(net, align=True)
    assert plain.names == kernel_similarity(net).names == ["0", "1", "2"]
    assert plain.matrix[0, 2].isnan() and aligned.kind == "random kernel cosine (aligned)"
    assert abs(plain.matrix[0, 1]) < 0.2 < aligned.matrix[0, 1]


def test_block_permutation_test_finds_planted_blocks_and_not_noise():
    gen = torch.Generator().manual_seed(0)
    groups = [0] * 5 + [1] * 5 + [2] * 5
    noise = torch.rand(15, 15, generator=gen)
    noise = (noise + noise.T) / 2
    blocks = torch.tensor([[float(a == b) for b in groups] for a in groups])
    found = block_permutation_test(noise + blocks, groups, permutations=500)
    assert found.statistic == pytest.approx(1.0, abs=0.1) and found.p_value < 0.01
    chance = block_permutation_test(noise, groups, permutations=500)
    assert chance.p_value > 0.05 and abs(chance.null_mean) < 0.02
    with pytest.raises(ValueError, match="one group per layer"):
        block_permutation_test(noise, groups[:3])
    with pytest.raises(ValueError, match="put some layers together"):
        block_permutation_test(noise, list(range(15)))


def test_label_permutation_test_separates_class_routing_from_chance():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    planted = torch.randn(60, 4, generator=gen) + 2 * labels[:, None]
    blind = torch.randn(60, 4, generator=gen)
    routing = Routing(["a", "b"], {"a": planted, "b": blind}, None)
    tests = label_permutation_test(routing, labels, permutations=200)
    assert tests["a"].p_value < 0.01 and tests["a"].statistic > 0.5
    assert tests["b"].p_value > 0.01
    assert tests["b"].null_mean == pytest.approx(2 / 59, abs=0.02)  # (K - 1) / (N - 1)


def test_label_permutation_test_gives_no_p_value_for_a_gate_that_never_varies():
    labels = torch.arange(40) % 4
    varying = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    routing = Routing(["still", "moving"], {"still": torch.full((40, 3), 0.8),
                                            "moving": varying}, None)
    tests = label_permutation_test(routing, labels, permutations=50)
    assert math.isnan(tests["still"].statistic) and math.isnan(tests["still"].p_value)
    assert not tests["still"].p_value < 0.05  # never counted as routing by class
    assert 1 / 51 <= tests["moving"].p_value <= 1


def test_fixed_gates_hold_every_gate_constant_and_come_off():
    torch.manual_seed(0)
    net, x = randomize(TinyNet(gate_form="identity")), torch.randn(6, 3, 12, 12)
    routing = capture_routing(net, x)
    means = {name: gates.mean(dim=0) for name, gates in routing.gates.items()}
    with fixed_gates(net, means):
        fixed = capture_routing(net, x)
    for name in routing.names:
        torch.testing.assert_close(fixed.gates[name], means[name].expand(6, -1))
    with fixed_gates(net, 1.0):
        assert (capture_routing(net, x).gates["conv2"] == 1).all()
    assert all(not m._forward_hooks for m in net.modules())
    torch.testing.assert_close(capture_routing(net, x).gates["conv2"], routing.gates["conv2"])
    with pytest.raises(TypeError, match="gates must be a number"):
        with fixed_gates(net, "mean"):
            pass


def test_analysis_images_mix_every_source_reproducibly():
    from kdna.data import analysis_images
    from kdna.data.photos import PHOTOS

    mixed = analysis_images(48, size=32, seed=0)
    assert mixed.images.shape == (48, 3, 32, 32)
    assert 0 <= mixed.images.min() and mixed.images.max() <= 1
    assert {"photo", "face", "non-face", "digit"} == set(mixed.kinds)
    assert sum(k == "photo" for k in mixed.kinds) == 24 and len(set(mixed.sources)) > 20
    assert len(PHOTOS) >= 20
    torch.testing.assert_close(analysis_images(48, size=32, seed=0).images, mixed.images)


def test_integrated_gradients_start_from_zeros_or_a_blurred_copy():
    pytest.importorskip("captum")
    from kdna.analysis.attribution import attribute_prediction

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    x = torch.rand(2, 3, 16, 16)
    zeros = attribute_prediction(net, x, 0, steps=4)
    blurred = attribute_prediction(net, x, 0, steps=4, baseline="blur")
    assert zeros.shape == blurred.shape == (2, 16, 16) and not torch.allclose(zeros, blurred)
    with pytest.raises(ValueError, match="baseline"):
        attribute_prediction(net, x, 0, baseline="black")
