import warnings

# fvcore.nn compiles two losses with torch.jit.script when it is imported, which this torch deprecates with a
# FutureWarning that every tool printed twice; it is fvcore's, not a problem of the run, so it is not shown.
warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
