"""Fine-tuning self-supervised backbones in Detectron2, and everything around it: converting weights, results
tables, the dense probe, pipelines of tool runs. Only the Detectron2 add-on modules import Detectron2
(``config``, ``coverage``, ``datasets``, ``probe``, ``roi_heads``, ``trainer``); importing them registers what
they add, as a Detectron2 project package does."""
