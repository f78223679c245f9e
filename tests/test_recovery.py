"""Sharing with recovery: new parents, relaxed children, distillation, damage-guided sharing."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import kdna
from kdna.conversion import apply_plan, plan_conversion
from kdna.conversion.budget import plan_by_damage
from kdna.conversion.parents import aligned_mean, least_squares_parent
from kdna.conversion.recovery import distill, recovery_blocks
from kdna.nn import ChildConv2d, LowRankResidual, ParentKernel, fit_scales, relax, residual_size


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(width)

    def forward(self, x):
        return torch.relu(self.norm(self.conv(x)))


def small_net(seed: int = 0, width: int = 16, blocks: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Sequential(*[Block(width) for _ in range(blocks)]),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))
    for m in net.modules():  # running statistics of the inputs below, as a trained net has
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        net.train()(images(256, seed=3))
        net[5].weight.mul_(20)  # logits that differ from input to input, classes balanced
        net[5].bias.sub_(net.eval()(images(256, seed=3)).mean(dim=0))
    return net.eval()


def images(n: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


# ---- relaxed children ------------------------------------------------------------------------
def test_a_full_rank_residual_reproduces_any_kernel():
    parent = ParentKernel(8, 6, 3)
    child = parent.child(gate_reduction=None)
    target = torch.randn(6, 8, 3, 3)
    error = relax(child, 6, target)
    assert error < 1e-5
    torch.testing.assert_close(child.static_weight(), target, atol=1e-5, rtol=0)


def test_a_truncated_residual_is_the_best_rank_r_correction():
    parent = ParentKernel(8, 6, 1)
    child = parent.child(gate_reduction=None)
    target = torch.randn(6, 8, 1, 1)
    delta = (target - child.static_weight()).detach().reshape(6, 8)
    singular = torch.linalg.svdvals(delta)
    error = relax(child, 2, target)
    expected = singular[2:].square().sum().sqrt() / torch.linalg.vector_norm(target)
    assert error == pytest.approx(expected.item(), rel=1e-4)


def test_a_relaxed_child_folds_to_the_same_outputs():
    parent = ParentKernel(8, 8, 3)
    child = ChildConv2d(parent, 8, 8, 3, padding=1, gate_reduction=2, gate_form="identity")
    relax(child, 3, torch.randn(8, 8, 3, 3))
    with torch.no_grad():
        child.gate.fc2.weight.normal_()  # a gate that is not the identity
    norm = nn.BatchNorm2d(8).eval()
    x = torch.randn(2, 8, 10, 10)
    model = nn.Sequential(child, norm).eval()
    with torch.no_grad():
        expected = model(x)
        kdna.fold(model)
        assert child.is_folded
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_residual_parameters_count_as_adapter_parameters():
    child = ParentKernel(8, 6, 3).child(gate_reduction=None)
    before = sum(p.numel() for p in child.adapter_parameters())
    relax(child, 2)
    after = sum(p.numel() for p in child.adapter_parameters())
    assert after - before == residual_size((6, 8, 3, 3), 2) == 2 * (6 + 72)


def test_a_fresh_residual_starts_at_zero():
    child = ParentKernel(8, 6, 3).child(gate_reduction=None)
    before = child.static_weight().detach().clone()
    assert relax(child, 2) != relax(child, 2)  # nan without a target
    torch.testing.assert_close(child.static_weight(), before)


@pytest.mark.parametrize(("rank", "message"), [(0, "rank must be a positive"),
                                               (9, "rank must be at most")])
def test_bad_ranks_are_refused(rank, message):
    with pytest.raises(ValueError, match=message):
        LowRankResidual((6, 8, 1, 1), rank)


def test_relax_refuses_what_is_not_a_child():
    with pytest.raises(TypeError, match="must be a KernelDNA child"):
        relax(nn.Conv2d(3, 3, 1), 1)


# ---- new parents -----------------------------------------------------------------------------
def test_the_aligned_mean_does_not_cancel_filters_of_opposite_sign():
    base = torch.randn(4, 5, 3, 3)
    flipped = base * torch.tensor([1.0, -1.0, 2.0, -0.5])[:, None, None, None]
    plain = (base + flipped) / 2
    aligned = aligned_mean([base, flipped])
    cosine = torch.nn.functional.cosine_similarity(aligned.flatten(1), base.flatten(1))
    assert cosine.min() > 0.999  # every filter of the aligned mean points along base's
    assert torch.linalg.vector_norm(plain[1]) < 1e-6  # the plain mean cancels filter 1


def test_the_least_squares_parent_fits_members_better_than_one_member():
    torch.manual_seed(0)
    common = torch.randn(8, 6, 3, 3)
    members = [common + 0.8 * torch.randn(8, 6, 3, 3) for _ in range(4)]

    def total_error(parent):
        return sum(fit_scales(m, parent)[2] for m in members)

    assert total_error(least_squares_parent(members)) < total_error(members[0])


@pytest.mark.parametrize("init", ["mean", "lsq"])
def test_a_new_parent_makes_every_member_a_child(init):
    net = small_net()
    report = kdna.convert(net, example_inputs=images(4), gate_reduction=None, parent_init=init)
    group = report.groups[0]
    assert group.parent_init == init
    assert len(group.children) == 4  # the reference member too
    children = [net.get_submodule(c.name) for c in group.children]
    assert all(c.parent is children[0].parent for c in children)
    assert isinstance(children[0].parent, ParentKernel)
    kernel = 16 * 16 * 9
    assert report.params_before - report.params_after == group.params_saved == 3 * kernel - 4 * (
        16 + 9)
    assert report.layout == {group.parent: group.child_names}
    assert group.parent not in group.child_names


def test_residuals_lower_the_fit_error_and_cost_what_the_report_says():
    plain, relaxed = small_net(), small_net()
    a = kdna.convert(plain, example_inputs=images(4), gate_reduction=None)
    b = kdna.convert(relaxed, example_inputs=images(4), gate_reduction=None, residual_rank=4)
    assert max(b.fit_errors.values()) < min(a.fit_errors.values())
    assert b.params_after - a.params_after == len(b.children) * residual_size((16, 16, 3, 3), 4)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"parent_init": "median"}, "parent_init"),
    ({"residual_rank": -1}, "residual_rank"),
    ({"share": False, "residual_rank": 2}, "share=False"),
])
def test_bad_recovery_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        kdna.ConvertConfig(**overrides)


# ---- distillation ----------------------------------------------------------------------------
def test_recovery_blocks_are_the_blocks_that_hold_children_and_parents():
    net = small_net()
    report = kdna.convert(net, example_inputs=images(4), gate_reduction=None)
    blocks = recovery_blocks(net)
    assert blocks == ["2.0", "2.1", "2.2", "2.3"]
    assert report.groups[0].parent.rsplit(".", 1)[0] in blocks


def test_distillation_raises_agreement_and_leaves_the_model_as_it_was_set():
    teacher = small_net()
    student = copy.deepcopy(teacher)
    kdna.convert(student, example_inputs=images(4), gate_reduction=None)
    flags = {n: p.requires_grad for n, p in student.named_parameters()}
    student.get_submodule("0").weight.requires_grad_(False)
    flags["0.weight"] = False
    frozen = student.get_submodule("5").weight.detach().clone()
    result = distill(student, teacher, images(128), held_out=images(128, seed=2), train="blocks",
                     block_steps=200, logit_steps=50, lr=3e-3, batch_size=32, progress=False)
    # on held-out inputs: a random teacher's top-1 margins are too thin to count on
    assert result.after.kl < 0.5 * result.before.kl
    assert result.after.logit_error < 0.7 * result.before.logit_error
    assert result.block_losses[-1] < result.block_losses[0]
    assert {n: p.requires_grad for n, p in student.named_parameters()} == flags
    assert not student.training
    torch.testing.assert_close(student.get_submodule("5").weight, frozen)  # the head: frozen
    assert "distilled 4 blocks" in str(result)


def test_distilling_the_adapters_leaves_parents_and_dense_layers_exactly_as_they_were():
    teacher = small_net()
    student = copy.deepcopy(teacher)
    report = kdna.convert(student, example_inputs=images(4), gate_reduction=None, residual_rank=4)
    parent = student.get_submodule(report.groups[0].parent)
    dense = {n: p.detach().clone() for n, p in student.named_parameters()
             if ".residual." not in n and "scale" not in n}
    result = distill(student, teacher, images(128), held_out=images(128, seed=2),
                     block_steps=100, logit_steps=20, lr=3e-3, batch_size=32, progress=False)
    assert result.blocks == [n.rsplit(".", 1)[0] for n in report.children]  # no parent block
    assert result.after.kl < result.before.kl
    for name, value in student.named_parameters():
        if name in dense:
            torch.testing.assert_close(value, dense[name], rtol=0, atol=0)
    assert isinstance(parent, nn.Conv2d)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"train": "everything"}, ValueError, "train must be one of"),
    ({"block_steps": -1}, ValueError, "block_steps"),
    ({"lr": 0}, ValueError, "lr"),
    ({"blocks": ["nope"]}, ValueError, "'nope' is not a module"),
    ({"blocks": []}, ValueError, "blocks is empty"),
    ({"temperature": -1.0}, ValueError, "temperature"),
])
def test_bad_distillation_arguments_are_refused(kwargs, error, message):
    teacher = small_net()
    student = copy.deepcopy(teacher)
    kdna.convert(student, example_inputs=images(4), gate_reduction=None)
    with pytest.raises(error, match=message):
        distill(student, teacher, images(8), progress=False, **kwargs)


def test_distilling_an_unconverted_network_says_to_convert_it():
    with pytest.raises(ValueError, match="convert it first"):
        distill(small_net(), small_net(), images(8), progress=False)


# ---- damage-guided sharing -------------------------------------------------------------------
class TwoStages(nn.Module):
    """Two groups of same-shaped layers: one whose members are scaled copies (free to share),
    one whose members are unrelated (sharing it changes the function)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Sequential(*[nn.Conv2d(8, 8, 1, bias=False) for _ in range(3)])
        self.b = nn.Sequential(*[nn.Conv2d(8, 8, 3, padding=1, bias=False) for _ in range(3)])
        self.stem = nn.Conv2d(3, 8, 1)
        self.head = nn.Linear(8, 5)
        with torch.no_grad():
            for i, conv in enumerate(self.a):
                conv.weight.copy_(self.a[0].weight * (i + 1))

    def forward(self, x):
        x = self.b(self.a(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


def test_damage_guided_sharing_takes_the_harmless_layers_first():
    model = TwoStages().eval()
    x = images(16)
    result = plan_by_damage(model, 0.01, x, gate_reduction=None, progress=False)
    assert [g.parent for g in result.chosen] == [result.measured[0].parent]
    assert result.chosen[0].parent.startswith("a.")
    assert [g.parent[0] for g in result.measured] == ["a", "a", "b", "b"]
    assert result.measured[1].agreement.kl < 1e-6 < result.measured[2].agreement.kl
    assert result.saving >= 0.01
    assert kdna.count_parameters(model) == result.params_before  # the model is unchanged
    report = apply_plan(copy.deepcopy(model), result.plan)
    assert report.params_before - report.params_after == sum(
        g.params_saved for g in result.chosen)
    everything = plan_by_damage(model, 0.99, x, gate_reduction=None, progress=False,
                                min_spread=0)  # no check: the unrelated b.* together keep <10%
    assert len(everything.chosen) == 4 and everything.saving < 0.99  # every child of both groups
    checked = plan_by_damage(model, 0.99, x, gate_reduction=None, progress=False)
    assert [g.parent[0] for g in checked.chosen] == ["a", "a", "b"] and len(checked.refused) == 1
    automatic = plan_conversion(model, gate_reduction=None, example_inputs=x).layout
    assert {p: sorted(c) for p, c in everything.plan.layout.items()} == {
        p: sorted(c) for p, c in automatic.items()}
    assert "sharing by measured damage" in str(everything)


@pytest.mark.parametrize("saving", [0, 1, 1.5, True, "15%"])
def test_a_saving_that_is_not_a_fraction_is_refused(saving):
    with pytest.raises(ValueError, match="saving must be a fraction"):
        plan_by_damage(TwoStages(), saving, images(4), progress=False)


# ---- the crops recovery and measurement use --------------------------------------------------
def test_photo_crops_of_disjoint_photos_are_reproducible_and_in_range():
    from kdna.data.photos import HELD_OUT_PHOTOS, NATURAL_PHOTOS, RECOVERY_PHOTOS, photo_crops

    assert not set(HELD_OUT_PHOTOS) & set(RECOVERY_PHOTOS)
    assert set(HELD_OUT_PHOTOS) | set(RECOVERY_PHOTOS) == set(NATURAL_PHOTOS)
    crops = photo_crops(3, ("coffee",), size=32, seed=4)
    assert crops.shape == (3, 3, 32, 32) and 0 <= crops.min() and crops.max() <= 1
    torch.testing.assert_close(crops, photo_crops(3, ("coffee",), size=32, seed=4))
    assert not torch.equal(crops, photo_crops(3, ("coffee",), size=32, seed=5))
    with pytest.raises(ValueError, match="photos must be a non-empty list"):
        photo_crops(2, ("no such photo",))
    with pytest.raises(ValueError, match="photos must be a non-empty list"):
        photo_crops(2, "coffee")


class Chain(nn.Module):
    """Three 1x1 convolutions in a row, then a head. Channel 0 of the input is constant,
    channel 1 carries the signal. ``l1`` and ``l2`` are identities; ``l0`` passes every channel
    but writes ``1 + a * signal`` into channel 1, so sharing ``l1`` or ``l2`` with ``l0`` as
    the parent (a scale per output filter) keeps ``a**2 / (1 + a**2)`` (30%) of the signal:
    each child alone keeps 30% of the outputs' spread, the two together 9%."""

    def __init__(self, width: int = 16, a: float = (0.3 / 0.7) ** 0.5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.l0, self.l1, self.l2 = (nn.Conv2d(width, width, 1, bias=False) for _ in range(3))
        self.head = nn.Linear(width, 5)
        with torch.no_grad():
            for conv in (self.l0, self.l1, self.l2):
                conv.weight.copy_(torch.eye(width)[:, :, None, None])
            self.l0.weight[1, 0], self.l0.weight[1, 1] = 1.0, a

    def forward(self, x):
        return self.head(self.l2(self.l1(self.l0(x))).flatten(1))


def chain_inputs(n: int = 32, width: int = 16) -> torch.Tensor:
    x = torch.zeros(n, width, 1, 1)
    x[:, 0] = 1.0
    x[:, 1] = torch.randn(n, 1, 1, generator=torch.Generator().manual_seed(2))
    return x


def spread_kept(model: nn.Module, original: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        new, old = model.eval()(x), original.eval()(x)
    return float((new - new.mean(0)).norm() / (old - old.mean(0)).norm())


CHAIN = {"groups": {"l0": ["l1", "l2"]}, "gate_reduction": None}


def test_children_harmless_alone_are_not_shared_together_where_they_collapse_the_outputs():
    model, x = Chain(), chain_inputs()
    for child in ("l1", "l2"):  # each alone keeps 30% of the spread
        alone = copy.deepcopy(model)
        apply_plan(alone, plan_conversion(model, groups={"l0": [child]}, gate_reduction=None))
        assert spread_kept(alone, model, x) == pytest.approx(0.3, abs=0.01)
    result = plan_by_damage(model, 0.9, x, progress=False, **CHAIN)
    assert [g.spread_kept for g in result.measured] == pytest.approx([0.3, 0.3], abs=0.01)
    assert len(result.chosen) == 1 and len(result.refused) == 1  # together they keep 9%
    shared = copy.deepcopy(model)
    apply_plan(shared, result.plan)
    assert spread_kept(shared, model, x) >= result.min_spread == 0.1
    assert "1 refused" in str(result) and "| refused |" in str(result)
    assert result.plan_for(0.5).layout == result.plan.layout  # refused children stay out
    with pytest.raises(ValueError, match="plan_for gives savings in"):
        result.plan_for(0.95)
    both = plan_by_damage(model, 0.9, x, progress=False, min_spread=0.05, **CHAIN)
    assert len(both.chosen) == 2 and not both.refused  # 9% is enough for a lower bound


def test_damage_needs_outputs_that_differ_and_a_child_that_keeps_them():
    model, x = Chain(), chain_inputs()
    with pytest.raises(ValueError, match="same output for every input"):
        plan_by_damage(model, 0.5, torch.zeros_like(x) + x[:1], progress=False, **CHAIN)
    with pytest.raises(ValueError, match=r"found no child it can share.*lower min_spread"):
        plan_by_damage(model, 0.5, x, progress=False, min_spread=0.5, **CHAIN)
    for bad in (1, -0.1, True, "10%"):
        with pytest.raises(ValueError, match="min_spread must be a fraction"):
            plan_by_damage(model, 0.5, x, progress=False, min_spread=bad, **CHAIN)
