"""transfer/pipeline/jobs.py: one job per seed into OUTPUT_DIR/seed_k, each resuming; the job's own error line."""
from transfer.pipeline.jobs import commands, failure_reason
from transfer.results import seed_runs


def test_fine_tuning_fans_out_one_resuming_job_per_seed():
    jobs = commands("finetune", "c.yaml", ["MODEL.WEIGHTS", "w.pkl", "OUTPUT_DIR", "out"], seeds=3, gpus=8)
    assert [job.argv for job in jobs] == [
        ["--num-gpus", "8", "--config-file", "c.yaml", "MODEL.WEIGHTS", "w.pkl", "OUTPUT_DIR", "out",
         "SEED", str(k), "OUTPUT_DIR", f"out/seed_{k}"] for k in range(3)]
    assert [overrides for _, _, overrides in seed_runs("out", 3)] == [job.argv[-4:] for job in jobs]
    pretrain = commands("pretrain", "p.yaml", ["OUTPUT_DIR", "o"], seeds=3, gpus=8)
    assert len(pretrain) == 1 and pretrain[0].argv == ["--config-file", "p.yaml", "OUTPUT_DIR", "o"]
    assert "--resume" in pretrain[0].command()


def test_the_reason_of_a_failed_job_is_its_own_error_line():
    class Job:
        def __init__(self, log):
            self.log = log

        def stderr(self):
            return self.log

    log = "Traceback (most recent call last):\n  ...\nerror: MODEL.WEIGHTS x.pkl: no such file\nCalledProcessError: 1\n"
    assert failure_reason(Job(log), RuntimeError("x")) == "error: MODEL.WEIGHTS x.pkl: no such file"
    assert failure_reason(Job("KeyError: 'a'\n"), RuntimeError("x")) == "KeyError: 'a'"
    assert failure_reason(Job(""), RuntimeError("last\nline")) == "line"


def test_finetune_jobs_keep_the_segmentation_flags_and_their_overrides():
    """submit.py finetune passes --sem-seg and --classes on; each job's train_net.py reads them back with the
    overrides (which a "+" flag would otherwise swallow) and its own seed."""
    from transfer.finetune.arguments import overrides_last, parse_args
    from transfer.pipeline.jobs import commands
    given = ["MODEL.WEIGHTS", "w.pkl", "--sem-seg", "a", "IMG", "LAB", "train.txt", "--sem-seg", "b", "IMG", "LAB",
             "--classes", "background", "nucleus", "OUTPUT_DIR", "out"]
    jobs = commands("finetune", "x.yaml", overrides_last(given), seeds=2, gpus=1)
    for seed, job in enumerate(jobs):
        args = parse_args(job.argv)
        assert args.sem_seg == [["a", "IMG", "LAB", "train.txt"], ["b", "IMG", "LAB"]]
        assert args.classes == ["background", "nucleus"]
        assert args.opts == ["MODEL.WEIGHTS", "w.pkl", "OUTPUT_DIR", "out", "SEED", str(seed),
                             "OUTPUT_DIR", f"out/seed_{seed}"]
