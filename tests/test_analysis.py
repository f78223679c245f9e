"""kdna.analysis: kernel similarity, CKA, activations and routing captured with hooks."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import TinyNet, randomize
from torch import nn

import kdna
from kdna import analysis
from kdna.analysis import (
    GATE_KINDS,
    Routing,
    capture_routing,
    child_distance,
    cka,
    cka_matrix,
    fixed_gates,
    gate_kinds,
    kernel_similarity,
    layer_activations,
    linear_cka,
    most_changed_channels,
    routing_statistics,
    similarity,
)


def _no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _orthogonal(size: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(size, size, generator=gen, dtype=torch.float64))
    return q


def _reference_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """HSIC with an explicit centring matrix, straight from Kornblith et al. (2019)."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1 / n
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float((k * l_).sum() / (torch.linalg.norm(k) * torch.linalg.norm(l_)))


class Broken(nn.Module):
    """Runs a network, then fails: hooks must not outlive the exception."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        self.net(x)
        raise RuntimeError("boom")


# -- CKA -----------------------------------------------------------------------------------

@pytest.mark.parametrize("debiased", [True, False])
@pytest.mark.parametrize(("n", "p"), [(60, 12), (10, 40)])  # feature form, then Gram form
def test_cka_is_one_for_identical_and_invariant_to_rotation_and_scale(n, p, debiased):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, p, generator=gen, dtype=torch.float64)
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    y = torch.randn(n, p, generator=gen, dtype=torch.float64) + 0.5 * x
    base = linear_cka(x, y, debiased=debiased)
    if not debiased:
        assert base == pytest.approx(_reference_cka(x, y), abs=1e-10)
    rotated = 7.5 * (y @ _orthogonal(p, gen))
    assert linear_cka(x, rotated, debiased=debiased) == pytest.approx(base, abs=1e-10)
    shifted = -0.01 * x + 3.0  # a shift is centred away
    assert linear_cka(shifted, y, debiased=debiased) == pytest.approx(base, abs=1e-10)


def test_cka_flattens_samples_and_is_near_zero_for_independent_activations():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(4000, 2, 2, generator=gen), torch.randn(4000, 3, generator=gen)
    assert abs(linear_cka(x, y)) < 0.01 and 0 <= linear_cka(x, y, debiased=False) < 0.01
    assert linear_cka(x, x.reshape(4000, 4).float()) == pytest.approx(1.0, abs=1e-9)


def test_linear_cka_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"same samples.*n = 5.*n = 6"):
        linear_cka(torch.randn(5, 3), torch.randn(6, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        linear_cka(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(TypeError, match="x must be a Tensor"):
        linear_cka([[1.0, 2.0]], torch.randn(1, 2))
    assert math.isnan(linear_cka(torch.ones(4, 3), torch.randn(4, 3)))  # no variation


def test_cka_matrix_compares_every_default_layer_in_model_order(device):
    torch.manual_seed(0)
    net = randomize(TinyNet()).to(device)
    images = torch.randn(16, 3, 12, 12, device=device)
    sim = cka_matrix(net, images)
    assert sim.names == ["stem", "block1.0", "conv2", "conv3"]
    assert sim.kind == "debiased linear CKA" and sim.matrix.dtype == torch.float32
    torch.testing.assert_close(sim.matrix, sim.matrix.T)
    torch.testing.assert_close(sim.matrix.diagonal(), torch.ones(4))
    acts = layer_activations(net, images, ["stem", "conv3"])
    assert sim.matrix[0, 3].item() == pytest.approx(linear_cka(acts["stem"], acts["conv3"]),
                                                    abs=1e-5)
    assert _no_hooks_left(net)


def test_cka_matrix_pools_large_activations_to_bounded_features():
    conv = nn.Conv2d(8, 8, 1)
    pooled = similarity._pooled(conv, torch.randn(2, 8, 40, 30))
    assert pooled.shape[0] == 2 and 2048 < pooled.shape[1] <= analysis.MAX_FEATURES
    small = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(similarity._pooled(conv, small), small.flatten(1))
    last = similarity._pooled(nn.Linear(4, 16), torch.randn(2, 50, 50, 16))  # channels-last
    assert last.shape[1] <= analysis.MAX_FEATURES and last.shape[1] % 16 == 0
    wide = similarity._pooled(conv, torch.randn(2, 5000, 3, 3))  # wider than the limit
    assert wide.shape == (2, 5000)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    sim = cka_matrix(net, torch.randn(6, 3, 32, 32), debiased=False)  # 8192 features each
    assert sim.names == ["0", "2"] and 0 < sim.matrix[0, 1] <= 1


def test_cka_matrix_rejects_bad_inputs():
    net = TinyNet()
    with pytest.raises(ValueError, match="at least 4 inputs"):
        cka_matrix(net, torch.randn(3, 3, 8, 8))
    with pytest.raises(TypeError, match="one batch as a Tensor"):
        cka_matrix(net, [[1.0, 2.0]])  # batches are Tensors (or a loader's (x, y))
    with pytest.raises(ValueError, match=r"no nn\.Conv2d"):
        cka_matrix(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.randn(3, 4))


# -- kernel similarity ---------------------------------------------------------------------

class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(8, 16, 3)
        self.b = nn.Conv2d(8, 16, 3)
        self.c = nn.Conv2d(8, 8, 3)
        self.dw = nn.Conv2d(8, 8, 3, groups=8)


def test_kernel_similarity_is_one_on_the_diagonal_and_nan_across_shapes():
    torch.manual_seed(0)
    sim = kernel_similarity(Pair())
    assert sim.names == ["a", "b", "c"] and sim.kind == "kernel cosine"  # depthwise left out
    torch.testing.assert_close(sim.matrix.diagonal(), torch.ones(3))
    assert sim.matrix[0, 2].isnan() and sim.matrix[2, 1].isnan()
    assert abs(sim.matrix[0, 1]) < 0.2  # independent random kernels
    assert kernel_similarity(Pair(), layers=["c", "dw"]).matrix[0, 1].isnan()


def test_aligned_similarity_sees_through_filter_permutation_and_sign(device):
    torch.manual_seed(0)
    model = Pair().to(device)
    permutation = torch.randperm(16, device=device)
    sign = torch.where(torch.rand(16, device=device) < 0.5, -1.0, 1.0)
    with torch.no_grad():
        model.b.weight.copy_(model.a.weight[permutation] * sign[:, None, None, None])
    plain = kernel_similarity(model, layers=["a", "b"])
    aligned = kernel_similarity(model, layers=["a", "b"], align=True)
    assert aligned.kind == "kernel cosine (aligned)"
    assert aligned.matrix[0, 1].item() == pytest.approx(1.0, abs=1e-5)
    assert aligned.matrix[1, 0].item() == pytest.approx(1.0, abs=1e-5)
    assert abs(plain.matrix[0, 1].item()) < 0.5


def test_kernel_similarity_uses_childrens_static_weights_and_parents_own_names():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                          nn.Conv2d(8, 8, 3, padding=1))
    kdna.convert(model, groups={"2": ["0", "1"]}, fit_scales=False, example_inputs=None)
    sim = kernel_similarity(model)
    assert sim.names == ["0", "1", "2"]  # the parent by its place, not as "0.parent"
    torch.testing.assert_close(sim.matrix, torch.ones(3, 3))  # fresh children = parent
    with torch.no_grad():
        model[0].filter_scale[:4] = -2.0  # flip four filters: cosine drops, alignment undoes
    assert kernel_similarity(model).matrix[0, 2] < 0.9
    assert kernel_similarity(model, align=True).matrix[0, 2] == pytest.approx(1.0, abs=1e-5)


def test_kernel_similarity_rejects_bad_layers():
    with pytest.raises(ValueError, match=r"'d' is not a module of Pair; valid names include"):
        kernel_similarity(Pair(), layers=["a", "d"])
    with pytest.raises(TypeError, match="has no kernel"):
        kernel_similarity(nn.Sequential(nn.ReLU(), nn.Conv2d(2, 2, 1)), layers=["0", "1"])
    with pytest.raises(TypeError, match="list of module names"):
        kernel_similarity(Pair(), layers="a")
    with pytest.raises(ValueError, match="named twice"):
        kernel_similarity(Pair(), layers=["a", "a"])
    with pytest.raises(ValueError, match=r"no nn\.Conv2d"):
        kernel_similarity(nn.Linear(3, 3))


# -- activations ---------------------------------------------------------------------------

def test_layer_activations_match_a_manual_forward_and_restore_modes():
    torch.manual_seed(0)
    net = randomize(TinyNet()).train()
    net.bn2.eval()  # a mixed-mode model keeps its mix
    x = torch.randn(3, 3, 12, 12)
    acts = layer_activations(net, x, ["stem", "conv2"])
    assert list(acts) == ["stem", "conv2"]
    net.eval()
    with torch.no_grad():
        stem = net.stem(x)
        torch.testing.assert_close(acts["stem"], stem)
        torch.testing.assert_close(acts["conv2"], net.conv2(net.block1(stem)))
    net.train()
    net.bn2.eval()
    acts = layer_activations(net, x, ["stem"])
    assert net.training and net.block1[1].training and not net.bn2.training
    assert not acts["stem"].requires_grad and _no_hooks_left(net)


def test_layer_activations_remove_hooks_when_the_forward_raises():
    broken = Broken(TinyNet()).train()
    with pytest.raises(RuntimeError, match="boom"):
        layer_activations(broken, torch.randn(2, 3, 8, 8), ["net.stem", "net.conv2"])
    assert _no_hooks_left(broken) and broken.training and broken.net.conv2.training


def test_layer_activations_name_valid_layers_for_an_unknown_one():
    with pytest.raises(ValueError, match=r"'stme'.*valid names include \['stem'"):
        layer_activations(TinyNet(), torch.randn(2, 3, 8, 8), ["stme"])
    with pytest.raises(TypeError, match="list of module names"):
        layer_activations(TinyNet(), torch.randn(2, 3, 8, 8), None)


# -- routing -------------------------------------------------------------------------------

def test_captured_routing_varies_per_input_and_equals_the_gate(device):
    torch.manual_seed(0)
    net = randomize(TinyNet()).to(device)
    x = torch.randn(6, 3, 12, 12, device=device)
    routing = capture_routing(net, x)
    assert routing.names == ["block1.0", "conv2"]  # conv3 has no gate
    gates = routing.gates["block1.0"]
    assert gates.shape == (6, 8) and gates.dtype == torch.float32 and gates.device.type == "cpu"
    assert gates.std(dim=0).mean() > 1e-3  # routing is input-dependent
    net.eval()
    with torch.no_grad():
        stem = net.stem(x)
        torch.testing.assert_close(gates, net.block1[0].gate(stem).cpu())
        torch.testing.assert_close(routing.gates["conv2"], net.conv2.gate(net.block1(stem)).cpu())
        torch.testing.assert_close(routing.logits, net(x).cpu())
    assert _no_hooks_left(net)


def test_gate_kinds_tell_untrained_constant_and_routing_gates_apart():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 12, 12)
    fresh = TinyNet(gate_form="identity")  # as converted: every gate exactly 1
    with pytest.warns(UserWarning, match="every gate of the 2 gated children is exactly 1"):
        kinds = gate_kinds(capture_routing(fresh, x))
    assert kinds == {"block1.0": "identity", "conv2": "identity"}
    trained = randomize(TinyNet(gate_form="identity"))
    assert gate_kinds(capture_routing(trained, x)) == {"block1.0": "per-input",
                                                       "conv2": "per-input"}
    with fixed_gates(trained, 0.5):
        assert set(gate_kinds(capture_routing(trained, x)).values()) == {"constant"}
    with fixed_gates(trained, 1.0), pytest.warns(UserWarning, match="exactly 1"):
        assert set(gate_kinds(capture_routing(trained, x)).values()) == {"identity"}
    near_one = torch.ones(4, 3)
    near_one[2, 1] += 1e-6
    routing = Routing(["a", "b", "c"], {"a": torch.ones(4, 3), "b": torch.full((4, 3), 0.7),
                                        "c": near_one}, None)
    assert gate_kinds(routing) == {"a": "identity", "b": "constant", "c": "per-input"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one gate is not 1: no warning
        assert gate_kinds(routing, tolerance=1e-5)["c"] == "identity"
    assert set(gate_kinds(routing).values()) <= set(GATE_KINDS)
    with pytest.raises(TypeError, match="routing must be a Routing"):
        gate_kinds({"a": torch.ones(4, 3)})
    with pytest.raises(ValueError, match="tolerance must be a number >= 0, got -1"):
        gate_kinds(routing, tolerance=-1)
    with pytest.raises(ValueError, match=r"gates of 'a' must be \[inputs, channels\]"):
        gate_kinds(Routing(["a"], {"a": torch.ones(3)}, None))


def test_capture_routing_takes_batches_and_data_loader_tuples():
    torch.manual_seed(0)
    net = randomize(TinyNet())
    x = torch.randn(10, 3, 8, 8)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.arange(10)), batch_size=4)
    routing = capture_routing(net, loader, layers=["conv2"], keep_logits=False)
    assert routing.names == ["conv2"] and routing.logits is None
    torch.testing.assert_close(routing.gates["conv2"], capture_routing(net, x).gates["conv2"])
    assert capture_routing(net, [x[:3], x[3:]]).logits.shape == (10, 5)


class ChannelsLast(nn.Module):
    """ConvNeXt-style pointwise Linears on channels-last activations, for kdna.convert."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        for block in self.blocks:
            x = x + torch.relu(block(x))
        return self.head(x.mean(dim=(1, 2)))


def test_capture_routing_sees_childlinear_gates_of_a_converted_model():
    torch.manual_seed(0)
    model, x = ChannelsLast(), torch.randn(5, 3, 6, 6)
    report = kdna.convert(model, parent_rule="last", example_inputs=x)
    with torch.no_grad():
        for name in report.children:
            model.get_submodule(name).gate.fc2.weight.normal_()
    routing = capture_routing(model, x)
    assert routing.names == report.children == ["blocks.0", "blocks.1"]
    first = routing.gates["blocks.0"]
    assert first.shape == (5, 8) and (first - 1).abs().max() > 1e-3  # moved away from 1
    assert model.training  # restored; the capture itself ran in eval mode
    with torch.no_grad():
        model.eval()
        pooled = model.stem(x).mean(dim=(2, 3))
        torch.testing.assert_close(first, model.blocks[0].gate(pooled))
    sim = cka_matrix(model, x, layers=["blocks.0", "blocks.1", "blocks.2"])
    assert sim.matrix.shape == (3, 3) and not sim.matrix.isnan().any()


def test_cka_matrix_averages_hsic_over_minibatches_and_takes_batches():
    torch.manual_seed(0)
    net, x = randomize(TinyNet()), torch.randn(8, 3, 12, 12)
    acts = layer_activations(net, x, ["stem", "conv3"])
    halves = [cka.hsic_matrix([acts["stem"][s], acts["conv3"][s]])
              for s in (slice(0, 4), slice(4, 8))]
    expected = cka.cka_from_hsic((halves[0] + halves[1]) / 2)[0, 1]
    split = cka_matrix(net, x, batch_size=4)
    assert split.matrix[0, 3].item() == pytest.approx(expected.item(), abs=1e-5)
    torch.testing.assert_close(cka_matrix(net, [x[:4], (x[4:], None)]).matrix, split.matrix)


def test_capture_routing_removes_hooks_when_the_forward_raises():
    broken = Broken(randomize(TinyNet())).train()
    with pytest.raises(RuntimeError, match="boom"):
        capture_routing(broken, torch.randn(2, 3, 8, 8))
    assert _no_hooks_left(broken) and broken.training
    net = TinyNet()
    with pytest.raises(TypeError, match="each batch must be a Tensor"):
        capture_routing(net, [torch.randn(2, 3, 8, 8), "not a batch"])
    assert _no_hooks_left(net)


def test_capture_routing_rejects_bad_inputs():
    with pytest.raises(ValueError, match="convert it first"):
        capture_routing(nn.Sequential(nn.Conv2d(3, 3, 1)), torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"'conv3' .*not a KernelDNA child with a gate"):
        capture_routing(TinyNet(), torch.randn(2, 3, 8, 8), layers=["conv3"])
    with pytest.raises(ValueError, match="no batch"):
        capture_routing(TinyNet(), [])
    with pytest.raises(TypeError, match="iterable of batches"):
        capture_routing(TinyNet(), 3)


def _routing(gates: torch.Tensor) -> Routing:
    return Routing(names=["g"], gates={"g": gates}, logits=None)


def test_routing_statistics_find_planted_class_effects_and_not_noise():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(3000) % 4
    effect = torch.rand(4, 16, generator=gen)
    noise = 0.01 * torch.randn(3000, 16, generator=gen)
    stats = routing_statistics(_routing(effect[labels] + noise), labels)
    assert stats.classes == [0, 1, 2, 3] and stats.mean_per_class["g"].shape == (4, 16)
    torch.testing.assert_close(stats.mean_per_class["g"], effect, atol=2e-3, rtol=0)
    assert stats.specialisation["g"] > 0.99
    noisy = 1 + 0.1 * torch.randn(3000, 16, generator=gen)
    stats = routing_statistics(_routing(noisy), labels.tolist())
    assert stats.specialisation["g"] < 0.01
    assert stats.variation["g"] == pytest.approx(0.1, rel=0.05)
    flat = routing_statistics(_routing(torch.ones(8, 4)), torch.arange(8) % 2)
    assert flat.variation["g"] == 0 and math.isnan(flat.specialisation["g"])


def test_routing_statistics_reject_bad_labels():
    routing = _routing(torch.rand(6, 4))
    with pytest.raises(ValueError, match=r"5 labels for the gates of 'g' of shape \[6, 4\]"):
        routing_statistics(routing, torch.arange(5))
    with pytest.raises(ValueError, match=r"integer classes, got dtype torch\.float32"):
        routing_statistics(routing, torch.zeros(6))
    with pytest.raises(TypeError, match="must be a Routing"):
        routing_statistics({"g": torch.rand(6, 4)}, torch.arange(6))


# -- children and single gates -------------------------------------------------------------

def test_child_distance_is_zero_for_new_children_and_grows_with_a_filter_scale():
    net = TinyNet()
    assert child_distance(net) == {"block1.0": 0.0, "conv2": 0.0, "conv3": 0.0}
    with torch.no_grad():
        net.conv2.filter_scale.fill_(0.25)
        net.conv3.filter_scale[0] = 1.0
    distances = child_distance(net)
    assert distances["conv2"] == pytest.approx(0.25) and distances["block1.0"] == 0
    assert 0 < distances["conv3"] < 1
    with pytest.raises(ValueError, match="Sequential has no KernelDNA children; convert it"):
        child_distance(nn.Sequential(nn.Conv2d(1, 1, 1)))


def test_most_changed_channels():
    gate = torch.tensor([1.0, 1.8, 0.2, 1.1, 0.9, 1.5])
    assert most_changed_channels(gate, k=2) == ([1, 5], [2, 4])
    boosted, suppressed = most_changed_channels(gate, k=10)
    assert boosted == [1, 5, 3, 0, 4, 2] and suppressed == boosted[::-1]
    with pytest.raises(ValueError, match=r"one gate vector.*shape \[2, 3\]"):
        most_changed_channels(torch.ones(2, 3))
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        most_changed_channels(gate, k=0)
    with pytest.raises(TypeError, match="gate must be a Tensor"):
        most_changed_channels([1.0, 2.0])


def test_module_exports_its_api():
    assert set(analysis.__all__) >= {"Similarity", "Routing", "RoutingStats", "kernel_similarity",
                                     "layer_activations", "linear_cka", "cka_matrix",
                                     "capture_routing", "routing_statistics", "child_distance",
                                     "most_changed_channels"}
    assert all(hasattr(analysis, name) for name in analysis.__all__)
