"""The run's machinery shared by every stage: atomic files, the folder lock, numerics modes, processes
(one, torchrun, SLURM) and provenance."""
