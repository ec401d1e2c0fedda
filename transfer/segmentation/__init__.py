"""Semantic segmentation as DenseCL's mmsegmentation runs it (FCN-D8): the model, the segmentor, the
training mapper."""
