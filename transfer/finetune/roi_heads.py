"""The C4 ROI head of the MoCo detection benchmark: Detectron2's Res5ROIHeads plus a norm after res5.

Self-supervised backbones come with normalisation statistics unlike the supervised ones the head was tuned for;
the extra norm (SyncBN in the protocol) re-centres res5's output before the box predictor.
"""
from detectron2.config import configurable
from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    @configurable
    def __init__(self, *, extra_norm: str = "BN", **kwargs):
        super().__init__(**kwargs)
        self.res5.add_module("norm", get_norm(extra_norm, self.res5[-1].out_channels))

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["extra_norm"] = cfg.MODEL.RESNETS.NORM
        return ret
