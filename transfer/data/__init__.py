"""Fine-tuning data: Detectron2 dataset registration, the checks before the first iteration, VOC files and
label maps read strictly, real images fetched, small generated sets, and the benchmarks' preparation (``prepare/``)."""
