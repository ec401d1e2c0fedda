"""Fine-tuning in Detectron2's own shape: ``setup(args) -> cfg`` and ``TransferTrainer(DefaultTrainer)``.

The trainer adds three things to Detectron2's: the evaluator that each dataset's metadata asks for; on a fresh
start, the checks that stop a run from quietly training on partly random weights or on weights with the wrong input
settings; and a resume that continues exactly (transfer/finetune/data_stream.py): the data order, every augmentation
draw and
the training step's random draws are functions of the seed and the iteration, so a run killed and resumed ends with
the weights of the run that was never stopped. On resume, the checkpointer's own resume is used (the run's last
checkpoint), and the iterations at which the run was resumed are recorded.
"""
import logging
import os
import zipfile

import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.data.build import _train_loader_from_config
from detectron2.engine import DefaultTrainer, default_setup
from detectron2.engine import defaults as detectron2_defaults
from detectron2.engine import hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from pretrain.runtime import numerics
from pretrain.runtime.distributed import peer_failure, weights_agree
from transfer.data.datasets import DatasetError, build_evaluator, check_classes, is_semantic
from transfer.finetune import roi_heads  # noqa: F401  (registers the extra-norm Res5 ROI head the C4 configs name)
from transfer.finetune.checkpointing import AtomicCheckpointer, PeerLost, StopOnSignal
from transfer.finetune.config import setup_cfg
from transfer.finetune.coverage import load_and_check_coverage
from transfer.finetune.data_stream import ResumableLoader, build_stream_loader, seed_generators, step_seed
from transfer.finetune.probe import freeze_backbone, reestimate_detector_bn
from transfer.segmentation import mapper as segmentation_data
from transfer.segmentation import model as segmentation  # registers the dilated ResNet and the segmentation heads
from transfer.weights import WeightsError, check_input_settings, check_weights_file

logger = logging.getLogger("transfer")
NORM_KEYS = ("RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD", "SEM_SEG_HEAD")


def used_norm_keys(cfg):
    """The parts of NORM_KEYS the model builds: an FPN only with an FPN backbone, a box head only with
    StandardROIHeads (C4's Res5 head has none), a mask head only with MASK_ON; the segmentation head alone after
    the ResNet of a semantic segmentation model."""
    used = ["RESNETS"]
    if is_semantic(cfg):
        return used + ["SEM_SEG_HEAD"]
    if "fpn" in cfg.MODEL.BACKBONE.NAME:
        used.append("FPN")
    if cfg.MODEL.ROI_HEADS.NAME != "Res5ROIHeads" and "Res5" not in cfg.MODEL.ROI_HEADS.NAME:
        used.append("ROI_BOX_HEAD")
    if cfg.MODEL.MASK_ON:
        used.append("ROI_MASK_HEAD")
    return used


def resolve_norms(cfg, world_size: int):
    """SyncBN needs several GPU processes: at world size 1 it is plain BN, and on CPU processes it must be
    naiveSyncBN (torch's SyncBatchNorm refuses CPU tensors). Returns what was changed, in words."""
    notes = []
    for key in NORM_KEYS:
        node = cfg.MODEL[key]
        if node.NORM != "SyncBN":
            continue
        if world_size == 1:
            node.NORM = "BN"
            notes.append(f"MODEL.{key}.NORM SyncBN -> BN (world size 1: same statistics)")
        elif cfg.MODEL.DEVICE == "cpu":
            node.NORM = "naiveSyncBN"
            notes.append(f"MODEL.{key}.NORM SyncBN -> naiveSyncBN (CPU processes)")
    return notes


def setup(args):
    """The frozen config of one fine-tuning process, with Detectron2's logging and output folder set up."""
    numerics.apply(getattr(args, "numerics", "fast"))  # in every process: torch's switches are per process
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    if getattr(args, "allow_partial", False):
        cfg.TRANSFER.ALLOW_PARTIAL_WEIGHTS = True
    if getattr(args, "eval_only", False) and cfg.TRANSFER.PROBE.ENABLED:
        # An evaluation reads a trained probe as it was saved: re-estimating its BN statistics (the first step of
        # the probe's training) would evaluate other weights, drawn anew on every call.
        cfg.TRANSFER.PROBE.ENABLED = False
    notes = resolve_norms(cfg, comm.get_world_size())
    cfg.freeze()
    # default_setup logs the config files syntax-highlighted with ANSI colour codes, into log.txt and into
    # redirected output alike: log them as plain text.
    detectron2_defaults._highlight = lambda code, filename: code
    reset_loggers()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="transfer", abbrev_name="transfer")
    norms = ", ".join(f"{k} {cfg.MODEL[k].NORM or 'none'}" for k in used_norm_keys(cfg))
    logger.info("norm layers actually used: %s%s", norms, "".join(f"\n  {n}" for n in notes))
    return cfg


def reset_loggers() -> None:
    """Before a run's logging is set up: the handlers an earlier run of this process added go (``--seeds K`` runs
    K fine-tunings in one process; Detectron2 adds handlers per OUTPUT_DIR, so seed 1 printed every line twice)."""
    for name in ("detectron2", "fvcore", "transfer"):
        for handler in logging.getLogger(name).handlers[:]:
            logging.getLogger(name).removeHandler(handler)
            handler.close()
    setup_logger.cache_clear()


def check_parameters_agree(trainer) -> None:
    """At the end of a finished multi-process run: every process holds the same parameters."""
    if comm.get_world_size() > 1 and trainer.iter >= trainer.max_iter:
        if not weights_agree(trainer.model):
            raise FloatingPointError("the processes of this run ended with different parameters")
        logger.info("parameters identical on all %d processes", comm.get_world_size())


def load_pretrained(cfg, model) -> None:
    """MODEL.WEIGHTS into ``model`` with every backbone parameter accounted for, input settings checked
    against the converter's sidecar; or a log line saying that training starts from random weights."""
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        logger.info("MODEL.WEIGHTS is empty: random initialisation")
        return
    if not os.path.exists(weights):
        raise WeightsError(f"MODEL.WEIGHTS {weights}: no such file")
    check_weights_file(weights)
    if check_input_settings(cfg, weights):
        logger.info("input settings agree with %s.json", weights)
    load_and_check_coverage(model, weights, cfg.TRANSFER.ALLOW_PARTIAL_WEIGHTS)


class TransferTrainer(DefaultTrainer):
    def __init__(self, cfg):
        super().__init__(cfg)
        # The hooks already hold this checkpointer: give it the atomic saves and the safe resume in place.
        self.checkpointer.__class__ = AtomicCheckpointer
        self.resumed_at = []  # the iterations at which this run was resumed (kept in its checkpoints)
        self.classes = check_classes(cfg)  # kept in its checkpoints: a model is evaluated with its own order

    def build_hooks(self):
        return super().build_hooks() + [StopOnSignal(), hooks.CallbackHook(after_train=check_parameters_agree)]

    def run_step(self):
        # The step's own draws (the RPN's and ROI heads' sampling) depend on the iteration, not on the history.
        seed_generators(step_seed(self.cfg.SEED, comm.get_rank(), self.iter))
        try:
            super().run_step()
        except RuntimeError as e:
            if comm.get_world_size() > 1 and peer_failure(e):
                raise PeerLost(str(e).splitlines()[0][:200]) from None
            raise

    @classmethod
    def build_model(cls, cfg):
        """Detectron2's model; for the probe, with the pretrained weights loaded, BN statistics re-estimated on
        the training images and the backbone frozen, before the optimizer and DDP see its parameters."""
        model = super().build_model(cfg)
        if cfg.TRANSFER.PROBE.ENABLED:
            load_pretrained(cfg, model)
            layers = reestimate_detector_bn(model, cls.build_train_loader(cfg), cfg.TRANSFER.PROBE.BN_ITERS)
            frozen = freeze_backbone(model)
            logger.info("probe: BN statistics of %d layers re-estimated on %d training batches; backbone frozen "
                        "(%d parameters)", layers, cfg.TRANSFER.PROBE.BN_ITERS, frozen)
        return model

    @classmethod
    def build_train_loader(cls, cfg):
        """Detectron2's training loader as a stream that resumes exactly (transfer/finetune/data_stream.py), built at
        the
        first batch: the iteration to continue from is known then."""
        mapper = segmentation_data.SemSegMapper(cfg, is_train=True) if is_semantic(cfg) else None
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            logger.warning("DATALOADER.SAMPLER_TRAIN %s: Detectron2's loader, which a resume does not continue "
                           "exactly (only TrainingSampler's stream does)", cfg.DATALOADER.SAMPLER_TRAIN)
            return build_detection_train_loader(cfg, mapper=mapper)
        found = _train_loader_from_config(cfg, mapper)
        return ResumableLoader(lambda start: build_stream_loader(
            found["dataset"], found["mapper"], cfg.SEED, found["total_batch_size"], found["aspect_ratio_grouping"],
            found["num_workers"], start))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        if is_semantic(cfg):
            return build_detection_test_loader(cfg, dataset_name, mapper=segmentation_data.SemSegMapper(cfg, False))
        return super().build_test_loader(cfg, dataset_name)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return segmentation.build_lr_scheduler(cfg, optimizer) or super().build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))

    def state_dict(self):
        # Detectron2 v0.6 leaves the optimizer (SGD's momentum) out of its checkpoints; later versions save it so.
        return {**super().state_dict(), "_trainer": self._trainer.state_dict(), "resumed_at": list(self.resumed_at),
                "classes": list(self.classes)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "_trainer" in state:
            self._trainer.load_state_dict(state["_trainer"])
        else:
            logger.warning("this checkpoint predates saving the optimizer: the run continues with SGD's momentum "
                           "at zero, not as it was")
        self.resumed_at = list(state.get("resumed_at", []))
        check_model_classes(state.get("classes"), self.classes, self.checkpointer.get_checkpoint_file())

    def resume_or_load(self, resume: bool = True) -> None:
        if resume and self.checkpointer.has_checkpoint():
            super().resume_or_load(resume=True)  # continue this run: its own last checkpoint
            self.resumed_at.append(self.start_iter)
            if isinstance(self.data_loader, ResumableLoader):
                self.data_loader.start_iter = self.start_iter
        else:
            if not self.cfg.TRANSFER.PROBE.ENABLED:  # the probe loaded its weights before re-estimating BN
                check_model_classes(recorded_classes(self.cfg.MODEL.WEIGHTS), self.classes, self.cfg.MODEL.WEIGHTS)
                load_pretrained(self.cfg, self.model)
            self.start_iter = 0

    def final_results(self):
        """The last evaluation's results (Detectron2's final evaluation hook stores them)."""
        return getattr(self, "_last_eval_results", {})


def recorded_classes(path: str):
    """The class list a fine-tuning checkpoint (``.pth`` with a trainer state) was trained with; None for other
    weights (a pretrained backbone has no classes)."""
    if not path.endswith(".pth") or not os.path.isfile(path):
        return None
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=zipfile.is_zipfile(path))
    trainer = state.get("trainer") if isinstance(state, dict) else None
    return trainer.get("classes") if isinstance(trainer, dict) else None


def check_model_classes(recorded, classes, path: str) -> None:
    """A model trained with one class order is not evaluated or continued with another: the scores would be
    computed against the wrong names (AP 100 in one order, 0 swapped)."""
    if recorded is not None and list(recorded) != list(classes):
        raise DatasetError(f"{path}: the model was trained with the classes {list(recorded)} in this order, this "
                           f"run's datasets have {list(classes)}; register them with --classes "
                           f"{' '.join(recorded)}")
