"""pretrain/backbone.py: the one ResNet forward equals torchvision's, depths and widths read from the tensors."""
import pytest
import torch
import torchvision

from pretrain.backbone import (
    BackboneError,
    architecture,
    build_resnet,
    infer_depth,
    infer_groups,
    normalise,
    resnet_stages,
)


@torch.no_grad()
def test_stages_equal_torchvisions_forward():
    model = build_resnet(18).eval()
    reference = torchvision.models.resnet18()
    reference.load_state_dict(model.state_dict(), strict=False)
    reference.eval()
    x = torch.randn(2, 3, 64, 96)
    stages = resnet_stages(model, x, ("layer3", "layer4"))
    y = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
    y = reference.layer3(reference.layer2(reference.layer1(y)))
    torch.testing.assert_close(stages["layer3"], y)
    torch.testing.assert_close(stages["layer4"], reference.layer4(y))
    assert stages["layer4"].shape == (2, 512, 2, 3)


@pytest.mark.parametrize("name, depth, groups", [("resnet18", 18, (1, 64)), ("resnet50", 50, (1, 64)),
                                                 ("resnext50_32x4d", 50, (32, 4)), ("wide_resnet50_2", 50, (1, 128))])
def test_depth_and_width_come_from_the_tensors(name, depth, groups):
    tensors = {k: v for k, v in torchvision.models.__dict__[name]().state_dict().items() if not k.startswith("fc.")}
    assert infer_depth(tensors, name) == depth and infer_groups(tensors) == groups
    assert str(depth) in architecture(depth, *groups)


def test_a_truncated_stage_is_named():
    tensors = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("layer3.5")}
    with pytest.raises(BackboneError):
        infer_depth(tensors, "cut.pth")


def test_normalise_is_torchvisions_normalize():
    images = torch.rand(2, 3, 8, 8)
    expected = torchvision.transforms.functional.normalize(images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    torch.testing.assert_close(normalise(images), expected)
