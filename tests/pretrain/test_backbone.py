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
    read_resnet,
    resnet_stages,
)


def pretraining_checkpoint(path, seed):
    """A file in this toolkit's layout: two differently drawn ResNet-18s as query and key encoders."""
    torch.manual_seed(seed)
    query, key = torchvision.models.resnet18(), torchvision.models.resnet18()
    state = {**{f"encoder_q.backbone.{k}": v for k, v in query.state_dict().items()},
             **{f"encoder_k.backbone.{k}": v for k, v in key.state_dict().items()}}
    torch.save({"model": state, "iteration": 1}, path)
    return query, key


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


def test_several_checkpoints_give_the_mean_of_their_encoders(tmp_path):
    (q1, k1), (q2, k2) = (pretraining_checkpoint(tmp_path / f"model_{i}.pth", i) for i in (1, 2))
    paths = [str(tmp_path / "model_1.pth"), str(tmp_path / "model_2.pth")]
    assert not torch.equal(q1.conv1.weight, k1.conv1.weight)
    for encoder, (a, b) in {"query": (q1, q2), "key": (k1, k2)}.items():
        model = build_resnet(weights=paths, encoder=encoder)
        for name, value in model.state_dict().items():
            if name.startswith("fc.") or name.endswith("num_batches_tracked"):
                continue
            expected = (a.state_dict()[name].float() + b.state_dict()[name].float()) / 2
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-7, msg=name)
    one = build_resnet(weights=paths[:1], encoder="key")
    torch.testing.assert_close(one.layer4[1].conv2.weight, k1.layer4[1].conv2.weight, rtol=0, atol=0)
    assert torch.equal(build_resnet(weights=paths[1]).conv1.weight, q2.conv1.weight)


def test_averaging_other_architectures_or_a_file_without_the_encoder_is_refused(tmp_path):
    pretraining_checkpoint(tmp_path / "r18.pth", 0)
    torch.save({k: v for k, v in torchvision.models.resnet34().state_dict().items() if not k.startswith("fc.")},
               tmp_path / "r34.pth")
    with pytest.raises(BackboneError, match="r34.pth: holds a ResNet-34 .* ResNet-18"):
        read_resnet([str(tmp_path / "r18.pth"), str(tmp_path / "r34.pth")])
    with pytest.raises(BackboneError, match="r34.pth: layout torchvision holds no key encoder"):
        read_resnet([str(tmp_path / "r34.pth")], encoder="key")
    with pytest.raises(BackboneError, match="no weights file"):
        read_resnet([])
