"""transfer/segmentation/model: the dilated ResNet against torchvision's, the FCN head against mmsegmentation's
layout, the losses against direct computations, the poly schedule against its formula and torch's, the mapper
(palette label maps, image and labels augmented together) and the photometric distortion."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transfer.data.synthetic import resnet_state

pytest.importorskip("detectron2")

from detectron2.modeling import build_backbone, build_model  # noqa: E402

from transfer.finetune.config import CONFIGS, setup_cfg  # noqa: E402
from transfer.segmentation.mapper import SemSegMapper, distort  # noqa: E402
from transfer.segmentation.model import PolyLR, build_lr_scheduler, segmentation_loss  # noqa: E402
from transfer.weights import torchvision_to_detectron2  # noqa: E402

VOC = os.path.join(CONFIGS, "voc12aug_FCN_R50_D8_20k.yaml")
TINY = os.path.join(CONFIGS, "tiny", "nuclei_FCN_R18_D8_cpu.yaml")
CPU = ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN"]


def test_dilated_resnet50_computes_torchvisions_output_stride_8_network():
    """torchvision's ``replace_stride_with_dilation=[False, True, True]`` is the same network as FCN-D8's
    backbone (mmsegmentation: strides (1, 2, 1, 1), dilations (1, 1, 2, 4), contract_dilation)."""
    import torchvision
    state = resnet_state(50)
    reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    reference.load_state_dict(state)
    cfg = setup_cfg(VOC, CPU + ["MODEL.RESNETS.OUT_FEATURES", "['res4', 'res5']"])
    backbone = build_backbone(cfg).eval()
    backbone.load_state_dict({torchvision_to_detectron2(k): v for k, v in state.items()
                              if not k.startswith("fc.") and "num_batches" not in k}, strict=True)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        ours = backbone(x)
        y = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        c4 = reference.layer3(reference.layer2(reference.layer1(y)))
        c5 = reference.layer4(c4)
    assert ours["res5"].shape == (1, 2048, 8, 10) and ours["res4"].shape == (1, 1024, 8, 10)
    torch.testing.assert_close(ours["res4"], c4, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours["res5"], c5, rtol=1e-4, atol=1e-4)
    assert backbone.size_divisibility == 8
    assert {k: v.stride for k, v in backbone.output_shape().items()} == {"res4": 8, "res5": 8}


def test_dilated_resnet18_dilates_each_stage_after_the_dilation_before_it_as_mmsegmentation():
    backbone = build_backbone(setup_cfg(TINY))
    dilation = {name: module.dilation[0] for name, module in backbone.named_modules()
                if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3)}
    assert (dilation["res3.0.conv1"], dilation["res4.0.conv1"], dilation["res4.1.conv1"]) == (1, 1, 2)
    assert (dilation["res5.0.conv1"], dilation["res5.1.conv1"]) == (2, 4)
    # mmsegmentation's BasicBlock dilates conv1 only
    assert all(d == 1 for name, d in dilation.items() if name.endswith("conv2"))
    assert all(m.stride == (1, 1) for n, m in backbone.named_modules()
               if n.startswith(("res4", "res5")) and isinstance(m, torch.nn.Conv2d))
    out = backbone(torch.randn(2, 3, 96, 64))
    assert out["res5"].shape == (2, 512, 12, 8) and out["res4"].shape == (2, 256, 12, 8)


def test_impossible_dilations_name_the_keys():
    cfg = setup_cfg(TINY, ["MODEL.RESNETS.RES4_DILATION", 2, "MODEL.RESNETS.RES5_DILATION", 2])
    with pytest.raises(ValueError, match="RES4_DILATION, RES5_DILATION = \\(2, 2\\)"):
        build_backbone(cfg)


def test_fcn_head_has_the_layers_of_mmsegmentations_fcn_r50_d8():
    """decode: 2048 -> 3x3 512 -> 3x3 512, concat (2048 + 512) -> 3x3 512, 1x1 -> 21; auxiliary on res4:
    1024 -> 3x3 256, 1x1 -> 21; every conv followed by a norm has no bias."""
    head = build_model(setup_cfg(VOC, CPU)).sem_seg_head
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items() if k.endswith("weight") and v.dim() == 4}
    assert shapes == {"decode.convs.0.weight": (512, 2048, 3, 3), "decode.convs.1.weight": (512, 512, 3, 3),
                      "decode.conv_cat.weight": (512, 2560, 3, 3), "decode.predictor.weight": (21, 512, 1, 1),
                      "aux.convs.0.weight": (256, 1024, 3, 3), "aux.predictor.weight": (21, 256, 1, 1)}
    biases = sorted(k for k in head.state_dict() if k.endswith("bias") and ".norm." not in k)
    assert biases == ["aux.predictor.bias", "decode.predictor.bias"]
    assert head.decode.dropout.p == 0.1 and head.aux_weight == 0.4


def test_losses_are_the_decode_and_the_weighted_auxiliary_cross_entropy():
    cfg = setup_cfg(TINY, ["MODEL.SEM_SEG_HEAD.DROPOUT", 0.0])
    model = build_model(cfg).train()
    head = model.sem_seg_head
    features = {"res4": torch.randn(2, 256, 4, 4), "res5": torch.randn(2, 512, 4, 4)}
    targets = torch.randint(0, 2, (2, 32, 32))
    targets[:, :5] = 255
    _, losses = head(features, targets)

    def reference(logits):  # mean over all pixels of -log p(target), ignored pixels counting 0
        up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
        logp = up.log_softmax(1)
        picked = logp.gather(1, targets.clamp(max=1)[:, None])[:, 0]
        return -(picked * (targets != 255)).sum() / targets.numel()
    torch.testing.assert_close(losses["loss_sem_seg"], reference(head.decode(features["res5"])))
    torch.testing.assert_close(losses["loss_sem_seg_aux"], 0.4 * reference(head.aux(features["res4"])))


def test_loss_averages_over_all_or_over_labelled_pixels():
    logits, targets = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    targets[0, :4] = 255
    labelled = F.cross_entropy(logits, targets, ignore_index=255)  # torch's mean over labelled pixels
    torch.testing.assert_close(segmentation_loss(logits, targets, 255, "labelled_pixels"), labelled)
    torch.testing.assert_close(segmentation_loss(logits, targets, 255, "all_pixels"), labelled * 96 / 128)
    with pytest.raises(ValueError, match="LOSS_AVERAGE 'mean'"):
        segmentation_loss(logits, targets, 255, "mean")


@pytest.mark.parametrize("warmup", [0, 10])
def test_poly_schedule_is_mmsegmentations(warmup):
    cfg = setup_cfg(VOC, ["SOLVER.MAX_ITER", 100, "SOLVER.WARMUP_ITERS", warmup, "SOLVER.WARMUP_FACTOR", 0.1])
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    seen = []
    for _ in range(100):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # mmengine PolyLR: eta_min + (base - eta_min) * (1 - t / T) ** power
    expected = [1e-4 + (0.01 - 1e-4) * (1 - t / 100) ** 0.9 for t in range(100)]
    # Detectron2's linear warmup: from factor x the schedule's start to the schedule's value at the warmup's end
    start, end = 0.1 * expected[0], expected[warmup]
    expected = [start + (end - start) * t / warmup if t < warmup else e for t, e in enumerate(expected)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)


def test_poly_multiplier_without_floor_is_torchs_polynomial_schedule():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    reference = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=50, power=0.9)
    for t in range(50):
        assert PolyLR(0.9, 0.0)(t / 50) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9)
        optimizer.step()
        reference.step()


def voc_palette_png(path, labels):
    from PIL import Image
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253  # VOC: 1 dark red, 2 green, 255 border
    image.putpalette(palette[:768])
    image.save(path)


def test_mapper_reads_palette_label_maps_as_class_indices_and_augments_them_with_the_image(tmp_path):
    from detectron2.data import detection_utils
    from PIL import Image
    labels = np.zeros((96, 128), np.uint8)
    labels[:, 64:] = 1
    labels[48:, :] = 2
    labels[40:44, :] = 255
    voc_palette_png(tmp_path / "labels.png", labels)
    # Detectron2's own reading turns the palette colours into grey levels, not class indices
    assert set(np.unique(detection_utils.read_image(str(tmp_path / "labels.png"), "L"))) != {0, 1, 2, 255}
    image = np.stack([labels * 80, labels * 80, labels * 80], axis=2).astype(np.uint8)  # grey level = class
    Image.fromarray(image).save(tmp_path / "image.png")
    cfg = setup_cfg(TINY, ["INPUT.PHOTOMETRIC_DISTORTION", False, "INPUT.CROP.SIZE", "(64, 64)"])
    mapper = SemSegMapper(cfg, is_train=True)
    record = {"file_name": str(tmp_path / "image.png"), "sem_seg_file_name": str(tmp_path / "labels.png")}
    np.random.seed(0)
    for _ in range(10):
        out = mapper(record)
        grey, target = out["image"][0].numpy().astype(int), out["sem_seg"].numpy()
        assert out["image"].shape[1:] == target.shape and set(np.unique(target)) <= {0, 1, 2, 255}
        labelled = target != 255
        agree = np.abs(grey[labelled] - 80 * target[labelled]) < 20
        assert agree.mean() > 0.9  # bilinear image vs nearest labels differ at the class borders only
    test = SemSegMapper(cfg, is_train=False)(record)
    assert "sem_seg" not in test and (test["height"], test["width"]) == (96, 128)


def test_mapper_refuses_a_colour_label_map(tmp_path):
    from PIL import Image
    Image.new("RGB", (32, 32)).save(tmp_path / "labels.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "image.png")
    mapper = SemSegMapper(setup_cfg(TINY), is_train=True)
    with pytest.raises(ValueError, match="labels.png: a label map holds one class index per pixel"):
        mapper({"file_name": str(tmp_path / "image.png"), "sem_seg_file_name": str(tmp_path / "labels.png")})


def test_photometric_distortion_steps():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    assert np.array_equal(distort(image), image)
    np.testing.assert_array_equal(distort(image, brightness=20.5),
                                  np.clip(image.astype(np.float32) + 20.5, 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(distort(image, contrast=1.3),
                                  np.clip(image.astype(np.float32) * 1.3, 0, 255).astype(np.uint8))
    grey = np.repeat(image[..., :1], 3, axis=2)  # no saturation: saturation and hue leave grey as it is
    assert np.abs(distort(grey, saturation=1.4, hue=10).astype(int) - grey).max() <= 1
    # contrast comes before saturation and hue or after them: the results differ
    assert not np.array_equal(distort(image, contrast=1.4, saturation=0.6, contrast_first=True),
                              distort(image, contrast=1.4, saturation=0.6, contrast_first=False))


def test_linear_probe_head_on_res4_and_res5_upsamples_to_the_image():
    cfg = setup_cfg(os.path.join(CONFIGS, "tiny", "nuclei_linear_probe_R18_cpu.yaml"))
    model = build_model(cfg).eval()
    assert model.backbone.size_divisibility == 32
    head = model.sem_seg_head
    assert tuple(head.predictor.weight.shape) == (2, 256 + 512, 1, 1)
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 100, 70) * 255, "height": 50, "width": 35}])
    assert out[0]["sem_seg"].shape == (2, 50, 35)
    features = {"res4": torch.randn(1, 256, 6, 4), "res5": torch.randn(1, 512, 3, 2)}
    assert head(features)[0].shape == (1, 2, 6, 4)  # the model resizes them to each image


def test_a_769_crop_is_padded_to_769_and_pixel_p_lies_on_feature_p_over_8_as_in_mmsegmentation():
    """mmsegmentation pads a Cityscapes crop to 769 (Pad size=crop_size), its 97-cell map is resized to 769 px with
    align_corners=True: resize(x, size) = F.interpolate(x, size, mode="bilinear", align_corners=True), so pixel p
    takes cell p * 96 / 768 = p / 8. Detectron2 would pad to 776 and put pixel 384 0.43 cells off."""
    from transfer.segmentation.segmentor import AlignedSegmentor
    cfg = setup_cfg(os.path.join(CONFIGS, "cityscapes_FCN_R50_D8_40k.yaml"),
                    ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.RESNETS.NORM", "BN",
                     "MODEL.SEM_SEG_HEAD.NORM", "BN", "MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    assert isinstance(model, AlignedSegmentor)
    seen = {}

    def head(features, targets):
        seen["features"], seen["targets"] = features["res5"].shape[-2:], targets.shape[-2:]
        return None, {}
    model.sem_seg_head.forward = head
    model.train()
    model([{"image": torch.rand(3, 700, 769) * 255, "sem_seg": torch.zeros(700, 769, dtype=torch.long)}])
    assert tuple(seen["targets"]) == (769, 769) and tuple(seen["features"]) == (97, 97)
    ramp = torch.arange(97, dtype=torch.float32).repeat(1, 1, 97, 1)  # cell j holds j
    resized = type(model.sem_seg_head).resized(model.sem_seg_head, ramp, (769, 769))
    pixels = torch.arange(769, dtype=torch.float32)
    assert torch.allclose(resized[0, 0, 0], pixels / 8, atol=1e-4)
    assert torch.allclose(resized[0, 0, 0, [384, 768]], torch.tensor([48.0, 96.0]))


def test_sliding_windows_follow_mmsegmentation_and_one_window_equals_the_whole_image():
    from transfer.segmentation.segmentor import window_starts
    assert window_starts(1025, 769, 513) == [0, 256] and window_starts(2049, 769, 513) == [0, 513, 1026, 1280]
    assert window_starts(500, 769, 513) == [0]
    cfg = setup_cfg(os.path.join(CONFIGS, "tiny", "nuclei_FCN_R18_D8_cpu.yaml"))
    model = build_model(cfg).eval()
    image = torch.rand(3, 100, 70) * 255
    with torch.no_grad():
        whole = model([{"image": image, "height": 50, "width": 35}])[0]["sem_seg"]
        model.slide = ((128, 128), (96, 96))
        slid = model([{"image": image, "height": 50, "width": 35}])[0]["sem_seg"]
        model.slide = ((64, 48), (32, 24))  # several windows: each pixel the mean of the windows that cover it
        several = model([{"image": image}])[0]["sem_seg"]
    assert torch.equal(whole, slid) and several.shape == (2, 100, 70)
    with torch.no_grad():
        corner = model.logits(((image - model.pixel_mean) / model.pixel_std)[:, :64, :48])
    assert torch.allclose(several[:, :32, :22], corner[:, :32, :22], atol=1e-5)  # the first window's alone (x: 0, 22)


def test_random_init_segmentation_starts_each_residual_block_at_zero_gamma_as_mmsegmentation():
    cfg = setup_cfg(os.path.join(CONFIGS, "voc12aug_FCN_R50_D8_20k_random_init.yaml"),
                    ["MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN", "MODEL.DEVICE", "cpu"])
    blocks = [b for stage in build_model(cfg).backbone.stages for b in stage]
    assert len(blocks) == 16 and all(torch.all(b.conv3.norm.weight == 0) for b in blocks)
    assert all(torch.all(b.conv1.norm.weight == 1) for b in blocks)
    pretrained = setup_cfg(os.path.join(CONFIGS, "voc12aug_FCN_R50_D8_20k.yaml"),
                           ["MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN", "MODEL.DEVICE", "cpu"])
    assert all(torch.all(b.conv3.norm.weight == 1) for stage in build_model(pretrained).backbone.stages
               for b in stage)
