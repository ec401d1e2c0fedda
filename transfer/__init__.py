"""Fine-tuning self-supervised backbones in Detectron2, and everything around it: converting weights, results
tables, the dense probe, pipelines of tool runs. Only the Detectron2 add-on modules import Detectron2
(``config``, ``coverage``, ``datasets``, ``probe``, ``roi_heads``, ``trainer``); importing them registers what
they add, as a Detectron2 project package does."""
import warnings

# fvcore.nn compiles two losses with torch.jit.script when it is imported, which this torch deprecates with a
# FutureWarning that every tool printed twice; it is fvcore's, not a problem of the run, so it is not shown.
warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
