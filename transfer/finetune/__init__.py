"""Detectron2 fine-tuning: the config, the command line, the checks before launch, the trainer with its
checkpoints and exact data stream, the weight coverage check, the extra-norm ROI head and the frozen-backbone probe."""
