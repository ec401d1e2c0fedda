"""Images to views: the image list and its order, the two-view augmentation with the geometry of each view,
and the device view pipeline."""
