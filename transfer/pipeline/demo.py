"""Run the demo or the study (transfer/pipeline/plan.py): every stage in the plan's numerics mode
(transfer/pipeline/stages.py skips those done with unchanged inputs), then the pretraining curves and the report
(transfer/pipeline/report.py). One pipeline per output folder: it holds ``OUT/.lock`` before it touches anything.
"""
import os

from pretrain.engine import plot_metrics
from pretrain.runtime import numerics
from pretrain.runtime.lock import OutputLock
from transfer.pipeline.plan import Plan, pretrain_dir
from transfer.pipeline.report import write_report
from transfer.pipeline.schedule import stages_of
from transfer.pipeline.stages import Stages, last_iteration


def run(plan: Plan, root: str, force: bool = False) -> str:
    """Run every stage (skipping those done with unchanged inputs unless ``force``), then write the report.
    Raises LockError, having written nothing, when another pipeline runs in ``plan.out``."""
    with OutputLock(plan.out):
        return run_locked(plan, root, force)


def run_locked(plan: Plan, root: str, force: bool) -> str:
    found = stages_of(plan)
    runner = Stages([s.seconds for s in found], os.path.join(plan.out, "logs"), root,
                    env=numerics.environment(plan.numerics))
    for stage in found:
        progress = None
        if stage.progress_file:
            progress = (lambda path=stage.progress_file: last_iteration(path))
        runner.run(stage.title, stage.command, stage.done_when, force, progress, stage.total, stage.clear)
    plot_metrics({f"{m} seed {s}": pretrain_dir(plan, m, s) for m in plan.methods for s in range(plan.pretrain_seeds)},
                 os.path.join(plan.out, "pretraining.png"))
    return write_report(plan, runner, root)
