"""The normalisation travels with the network: each registered arch's PretrainedConfig, the
attribute create_model attaches, and pretrained_config for timm models, torchvision weights,
wrapped models and plain modules (a clear error), explicit values winning."""

from __future__ import annotations

import copy
import pickle
import socket

import pytest
import torch
import torchvision
from torch import nn

import kdna
from kdna.data import IMAGENET_MEAN, IMAGENET_STD
from kdna.models import PretrainedConfig, create_model, list_models, pretrained_config
from kdna.models.imagenet import imagenet_categories

ESPRESSO = 967

# What each registered arch expects: (mean, std, weights= of its pretrained plain network).
EXPECTED = {
    "resnet18": (IMAGENET_MEAN, IMAGENET_STD, "DEFAULT"),
    "resnet50": (IMAGENET_MEAN, IMAGENET_STD, "DEFAULT"),
    "mobilenet_v2": (IMAGENET_MEAN, IMAGENET_STD, "DEFAULT"),
    "mobilenet_v2_1d2": (IMAGENET_MEAN, IMAGENET_STD, None),  # torchvision has no 0.5x weights
    "convnext_tiny": (IMAGENET_MEAN, IMAGENET_STD, "DEFAULT"),
    "efficientnet_lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "imagenet"),
}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty torch hub: anything that tries to download fails."""
    def unreachable(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", unreachable)


def test_every_registered_arch_declares_its_config():
    assert sorted(EXPECTED) == sorted(list_models())
    for arch, (mean, std, weights) in EXPECTED.items():
        config = pretrained_config(arch)
        assert (config.mean, config.std, config.weights) == (mean, std, weights), arch
        assert config.input_size == 224 and config.source == f"kdna registry: {arch}"
        assert (config.classes is None) == (weights is None)
        if config.classes is not None:
            assert config.classes == tuple(imagenet_categories())
    assert pretrained_config("MobileNet_V2_0.5") == pretrained_config("mobilenet_v2_1d2")


@pytest.mark.parametrize("arch", [a for a, (*_, w) in EXPECTED.items() if w == "DEFAULT"])
def test_registered_configs_agree_with_torchvisions_weights(arch, offline):
    declared = pretrained_config(arch)
    weights = torchvision.models.get_model_weights(arch)[declared.weights]
    read = pretrained_config(weights=weights)
    assert (read.mean, read.std, read.input_size, read.classes) == (
        declared.mean, declared.std, declared.input_size, declared.classes)


def test_no_pretrained_weights_means_none():
    with pytest.raises(ValueError, match=r"no pretrained MobileNetV2 0\.5x"):
        create_model("mobilenet_v2_1d2", kernel_dna=False, weights="DEFAULT")
    plain = create_model("mobilenet_v2_1d2", kernel_dna=False,
                         weights=pretrained_config("mobilenet_v2_1d2").weights)
    assert not any(isinstance(m, kdna.KernelChild) for m in plain.modules())


def test_the_pretrained_plain_network_of_an_arch(offline):
    config = pretrained_config("efficientnet_lite0")
    model = create_model("efficientnet_lite0", kernel_dna=False, weights=config.weights)
    assert model.pretrained_config == config  # the pretrained head: its labels too
    assert not any(isinstance(m, kdna.KernelChild) for m in model.modules())
    reference = kdna.models.efficientnet_lite.imagenet_state_dict()["features.0.conv.weight"]
    torch.testing.assert_close(model.features[0].conv.weight, reference)


@pytest.mark.parametrize("arch", list_models())
def test_create_model_attaches_the_config(arch):
    model = create_model(arch, num_classes=7)
    attached = model.pretrained_config
    mean, std, weights = EXPECTED[arch]
    assert attached == PretrainedConfig(mean, std, 224, weights, None, f"kdna registry: {arch}")
    assert attached.classes is None  # a new 7-way head, not the pretrained one
    assert not any("pretrained" in key for key in model.state_dict())
    assert copy.deepcopy(model).pretrained_config == attached
    assert pretrained_config(model) is attached


def test_the_attached_config_survives_pickling_and_wrappers():
    model = create_model("mobilenet_v2_1d2", kernel_dna=False, num_classes=3)
    assert pickle.loads(pickle.dumps(model)).pretrained_config == model.pretrained_config
    assert pretrained_config(nn.DataParallel(model)) is model.pretrained_config
    assert pretrained_config(torch.compile(model)) is model.pretrained_config
    peft = pytest.importorskip("peft")
    wrapped = peft.get_peft_model(model, peft.LoraConfig(target_modules=["classifier.1"], r=2))
    assert pretrained_config(wrapped) is model.pretrained_config


def test_a_timm_models_pretrained_cfg_is_read():
    timm = pytest.importorskip("timm")
    config = pretrained_config(timm.create_model("resnet18", pretrained=False))
    assert (config.mean, config.std, config.input_size) == (IMAGENET_MEAN, IMAGENET_STD, 224)
    assert config.source == "timm pretrained_cfg resnet18.a1_in1k" and config.weights is None
    assert config.classes[ESPRESSO] == "espresso"
    inception = pretrained_config(timm.create_model("inception_v3", pretrained=False,
                                                    num_classes=5))
    assert (inception.mean, inception.input_size) == ((0.5, 0.5, 0.5), 299)
    assert inception.classes is None  # its 5-way head is not the pretrained one


def test_torchvision_weights_are_read_without_download(offline):
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    config = pretrained_config(weights=weights)
    assert (config.mean, config.std, config.input_size) == (IMAGENET_MEAN, IMAGENET_STD, 224)
    assert config.weights == "IMAGENET1K_V2"
    assert config.source == "torchvision weights ResNet50_Weights.IMAGENET1K_V2"
    assert len(config.classes) == 1000 and config.classes[ESPRESSO] == "espresso"
    assert pretrained_config(weights="ResNet50_Weights.IMAGENET1K_V2") == config
    swag = pretrained_config(weights=torchvision.models.ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1)
    assert swag.input_size == 518  # the crop size its weights state, not an assumed 224
    with pytest.raises(ValueError, match=r"weights must be a torchvision weights enum member or "
                                         r"its full name .* got 'DEFAULT'"):
        pretrained_config(weights="DEFAULT")


def test_a_plain_module_without_mean_and_std_is_a_clear_error():
    with pytest.raises(ValueError, match=r"cannot tell which input normalisation this Sequential "
                                         r"expects: .* pass mean= and std="):
        pretrained_config(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten()))
    with pytest.raises(ValueError, match="needs a model, an arch name, weights="):
        pretrained_config()


def test_explicit_values_win():
    plain = pretrained_config(nn.Sequential(nn.Conv2d(1, 4, 3)), mean=[0.1], std=[0.3])
    assert (plain.mean, plain.std, plain.input_size) == ((0.1,), (0.3,), 224)
    assert plain.source == "given (input size 224 by default)" and plain.weights is None
    sized = pretrained_config(None, mean=(0.5,) * 3, std=(0.25,) * 3, input_size=96)
    assert sized.input_size == 96 and sized.source == "given"
    lite = pretrained_config("efficientnet_lite0", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert (lite.mean, lite.std, lite.weights) == (IMAGENET_MEAN, IMAGENET_STD, "imagenet")
    assert lite.source == "given mean and std, over kdna registry: efficientnet_lite0"
    smaller = pretrained_config(create_model("mobilenet_v2_1d2"), input_size=128)
    assert smaller.input_size == 128 and smaller.mean == IMAGENET_MEAN
    assert smaller.source == "kdna registry: mobilenet_v2_1d2; input size given"
    model = create_model("mobilenet_v2_1d2", kernel_dna=False)
    swag = torchvision.models.ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1
    theirs = pretrained_config(model, weights=swag)
    assert theirs.input_size == 518  # the weights named in the call win over the attribute


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"mean": (0.5,) * 3, "std": (0.5,) * 2}, ValueError, "one value per channel each"),
    ({"mean": (0.5,) * 3, "std": (0.5, 0.0, 0.5)}, ValueError, "std must be positive"),
    ({"mean": (0.5, float("nan"), 0.5), "std": (0.5,) * 3}, ValueError, "finite numbers"),
    ({"mean": "0.5", "std": (0.5,)}, TypeError, "mean must be a non-empty sequence"),
    ({"mean": (0.5,), "std": (0.5,), "input_size": 0}, ValueError, "input_size must be a "
                                                                   "positive integer"),
    ({"mean": (0.5,), "std": (0.5,), "classes": "cat"}, TypeError, "classes must be None or"),
    ({"mean": (0.5,), "std": (0.5,), "weights": ""}, TypeError, "weights must be None or"),
    ({"mean": (0.5,), "std": (0.5,), "source": ""}, TypeError, "source must be"),
])
def test_config_values_are_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        PretrainedConfig(**kwargs)


def test_config_is_frozen_and_normalised():
    config = PretrainedConfig([0.5, 0.5, 0.5], [1, 1, 1], classes=["a", "b"])
    assert config.mean == (0.5, 0.5, 0.5) and config.std == (1.0, 1.0, 1.0)
    assert config.classes == ("a", "b") and "<2 names: a, b, ...>" in repr(config)
    with pytest.raises(AttributeError):
        config.mean = (0.0,)


def test_pretrained_config_argument_errors():
    with pytest.raises(ValueError, match="mean and std go together"):
        pretrained_config("resnet18", mean=IMAGENET_MEAN)
    with pytest.raises(TypeError, match=r"model_or_arch must be an nn\.Module, a registered arch"):
        pretrained_config(3)
    with pytest.raises(ValueError, match=r"unknown model 'resnt18' \(did you mean 'resnet18'"):
        pretrained_config("resnt18")
