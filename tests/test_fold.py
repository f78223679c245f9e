"""fold / unfold: the deployment form computes the same function and round-trips exactly."""

import copy

import pytest
import torch
from conftest import TinyNet
from torch import nn

from kdna import FoldedNorm, ParentKernel, fold, unfold


def test_folded_equals_unfolded_without_batchnorm(tiny_net, images):
    tiny_net.eval()
    expected = tiny_net(images)
    fold(tiny_net, batchnorm=False)
    assert all(c.is_folded for c in tiny_net.children_convs())
    assert not any(isinstance(m, FoldedNorm) for m in tiny_net.modules())
    torch.testing.assert_close(tiny_net(images), expected, rtol=1e-5, atol=1e-6)


def test_folded_equals_unfolded_with_batchnorm(tiny_net, images):
    tiny_net.eval()
    expected = tiny_net(images)
    fold(tiny_net)
    # All three BatchNorms were found: one in a Sequential, two as convN/bnN siblings.
    assert isinstance(tiny_net.block1[1], FoldedNorm)
    assert isinstance(tiny_net.bn2, FoldedNorm) and isinstance(tiny_net.bn3, FoldedNorm)
    assert tiny_net.conv3.folded_bias is not None  # a BatchNorm gives a bias-free child a bias
    torch.testing.assert_close(tiny_net(images), expected, rtol=1e-5, atol=1e-5)


def test_unfold_restores_the_trainable_form_exactly(tiny_net, images):
    tiny_net.eval()
    expected = tiny_net(images)
    state = copy.deepcopy(tiny_net.state_dict())
    kinds = [type(m) for m in tiny_net.modules()]
    unfold(fold(tiny_net))
    assert [type(m) for m in tiny_net.modules()] == kinds
    assert not any(c.is_folded for c in tiny_net.children_convs())
    after = tiny_net.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], v) if torch.is_tensor(v) else after[k] == v
               for k, v in state.items())
    assert torch.equal(tiny_net(images), expected)
    tiny_net.train()(images).sum().backward()  # trains again
    assert tiny_net.parent.weight.grad is not None


def test_fold_switches_to_eval_and_folded_children_refuse_training(tiny_net, images):
    fold(tiny_net.train())
    assert not tiny_net.training
    tiny_net(images)
    with pytest.raises(RuntimeError, match=r"kdna\.unfold"):
        tiny_net.train()(images)


def test_fold_refuses_a_folded_model_and_a_model_without_children(tiny_net):
    fold(tiny_net)
    with pytest.raises(RuntimeError, match="already folded"):
        fold(tiny_net)
    with pytest.raises(ValueError,
                       match=r"^Sequential has no KernelDNA children; convert it first"):
        fold(nn.Sequential(nn.Conv2d(3, 3, 3)))


def test_a_batchnorm_of_another_width_is_not_folded():
    torch.manual_seed(0)
    net = nn.Sequential(ParentKernel(4, 4, 3).child(padding=1), nn.BatchNorm2d(8))
    fold(net)
    assert isinstance(net[1], nn.BatchNorm2d) and net[0].folded_bias is None


def test_fold_follows_to_and_stays_out_of_the_state_dict(images):
    net = TinyNet().eval()
    keys = net.state_dict().keys()
    fold(net)
    net.to(torch.float64)
    assert net.conv2.folded_weight.dtype == torch.float64
    assert {k.replace(".norm.", ".") for k in net.state_dict()} == set(keys)
