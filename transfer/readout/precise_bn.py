"""BN statistics of a frozen backbone re-estimated on a readout's training images (fvcore's precise BN), as the dense
probe and dense retrieval read it: through the stages the readout reads, not beyond. The deeper stages' BN layers
keep their statistics; the features read are the same to the bit as with a forward through the whole network
(the same operations on the same inputs), without computing the stages that would be thrown away."""
from typing import Sequence

import torch
from fvcore.nn.precise_bn import update_bn_stats

from pretrain.backbone import resnet_features


class StagesUpTo(torch.nn.Module):
    """A torchvision ResNet's stem and stages up to ``layer``; its modules are the model's own."""

    def __init__(self, model: torch.nn.Module, layer: str):
        super().__init__()
        self.model, self.layer = model, layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resnet_features(self.model, x, self.layer)


def reestimate_bn(model: torch.nn.Module, batches: Sequence[torch.Tensor], layer: str) -> None:
    """The running statistics of the BN layers that ``layer``'s features pass := their average over ``batches``
    (normalised images; train mode, no gradient); the model is left in eval mode. BN layers fvcore sees but the
    forward does not reach keep their values (fvcore averages their unchanged statistics)."""
    model.train()
    with torch.no_grad():
        update_bn_stats(StagesUpTo(model, layer), batches, len(batches))
    model.eval()
