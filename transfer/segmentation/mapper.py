"""The data side of the semantic segmentation transfer: mmsegmentation's training augmentations (random rescale,
category-constrained crop, flip, photometric distortion) and the mapper from a dataset record to the model's input.

Shapes: images ``(3, H, W)`` uint8; label maps ``(H, W)`` long, class indices with 255 where unlabelled.
"""
import copy

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from transfer.data.label_maps import read_label_png


class PhotoMetricDistortion(T.Augmentation):
    """mmsegmentation's PhotoMetricDistortion on uint8 RGB images: each step with probability 1/2, brightness
    (+-32), then contrast (x 0.5-1.5) either first or last, saturation (x 0.5-1.5) and hue (+-18 of OpenCV's 180)
    in HSV, every step rounded back to uint8."""

    def get_transform(self, image):
        draws = {"brightness": np.random.uniform(-32, 32) if np.random.randint(2) else None,
                 "contrast_first": bool(np.random.randint(2))}
        draws["contrast"] = np.random.uniform(0.5, 1.5) if np.random.randint(2) else None
        draws["saturation"] = np.random.uniform(0.5, 1.5) if np.random.randint(2) else None
        draws["hue"] = np.random.randint(-18, 18) if np.random.randint(2) else None
        return T.ColorTransform(lambda img: distort(img, **draws))


def _scale(img, alpha=1.0, beta=0.0):
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def distort(img, brightness=None, contrast_first=True, contrast=None, saturation=None, hue=None):
    """One draw of ``PhotoMetricDistortion`` applied to a uint8 RGB image ``(H, W, 3)``."""
    import cv2
    img = _scale(img, beta=brightness) if brightness is not None else img
    if contrast_first and contrast is not None:
        img = _scale(img, alpha=contrast)
    if saturation is not None or hue is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        if saturation is not None:
            hsv[..., 1] = _scale(hsv[..., 1], alpha=saturation)
        if hue is not None:
            hsv[..., 0] = (hsv[..., 0].astype(int) + hue) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first and contrast is not None:
        img = _scale(img, alpha=contrast)
    return img


def build_augmentations(cfg, is_train: bool):
    """mmsegmentation's order: random rescale, category-constrained crop, flip, photometric distortion (train);
    the test scale (test)."""
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    augmentations = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                          cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
    if cfg.INPUT.CROP.ENABLED:
        augmentations.append(T.RandomCrop_CategoryAreaConstraint(
            cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE, cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
            cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE))
    if cfg.INPUT.RANDOM_FLIP != "none":
        augmentations.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                          vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
    if cfg.INPUT.PHOTOMETRIC_DISTORTION:
        augmentations.append(PhotoMetricDistortion())
    return augmentations


class SemSegMapper:
    """A dataset record -> the model's input: the image, and in training the label map augmented with it.
    Label PNGs are read as the class indices they hold (Detectron2's mapper converts them to grey, which turns
    a palette PNG such as VOC's SegmentationClass into the palette colours' luminance)."""

    def __init__(self, cfg, is_train: bool = True):
        self.is_train, self.image_format = is_train, cfg.INPUT.FORMAT
        self.augmentations = T.AugmentationList(build_augmentations(cfg, is_train))

    def __call__(self, record):
        record = copy.deepcopy(record)
        image = utils.read_image(record["file_name"], format=self.image_format)
        utils.check_image_size(record, image)
        labels = read_label_png(record.pop("sem_seg_file_name")) if self.is_train else None
        if labels is not None and labels.shape != image.shape[:2]:
            raise ValueError(f"{record['file_name']}: image {image.shape[1]}x{image.shape[0]} and its label map "
                             f"{labels.shape[1]}x{labels.shape[0]} differ in size")
        augmented = T.AugInput(image, sem_seg=labels)
        self.augmentations(augmented)
        record["image"] = torch.as_tensor(np.ascontiguousarray(augmented.image.transpose(2, 0, 1)))
        if labels is not None:
            record["sem_seg"] = torch.as_tensor(augmented.sem_seg.astype("long"))
        return record
