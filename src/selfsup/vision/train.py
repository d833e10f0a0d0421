"""``selfsup vision train`` / ``eval``: any registered vision method on the training host.

Reads top to bottom: the config (one section per method), building the method, then ``train`` /
``resume`` / ``evaluate``. The LightningModule and callbacks are in :mod:`selfsup.vision.host`,
the methods in :mod:`selfsup.vision.methods`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import load_config
from ..errors import ConfigError, InputError
from ..io import atomic_write_json, safe_torch_load
from ..runs import Run, resume_run, start_run
from .schedules import lr_factor  # noqa: F401  (public here since SLA's first release)

# ============================================================================ config


@dataclass(frozen=True)
class DataConfig:
    # synthetic | mnist | fashion-mnist | cifar10 | cifar100 | stl10 | imagefolder |
    # tinted-fashion-mnist (items tinted and placed on coloured backgrounds; made, not fetched)
    # | fmnist-mosaic (2x2 mosaics of grey Fashion-MNIST items with per-pixel masks; made)
    name: str = "fashion-mnist"
    root: str | None = None  # data cache (default $SELFSUP_DATA or ~/.cache/selfsup/data)
    path: str | None = None  # imagefolder: a folder of class subfolders
    image_size: int | None = None  # imagefolder: resize to this size; made sets: size (32)
    val_size: int = 5000  # held-out training images for model selection
    per_class: int | None = None  # low-data setting: K training images per class
    imbalance_ratio: float = 1.0  # long-tailed setting: largest / smallest class size
    crop_padding: int = 2  # random crop after zero padding (0 = off)
    hflip: bool = True  # random horizontal flips
    synthetic_size: int = 2000  # number of training images of the synthetic set
    unlabeled: bool = False  # add the unlabeled split (STL-10) to training, label -1
    generator_seed: int = 0  # tinted-fashion-mnist, fmnist-mosaic: images' seed (not the run's)
    lazy: bool = False  # imagefolder: decode images from disk batch by batch (needs image_size)
    workers: int = 0  # data-loader processes (useful with lazy=true)


@dataclass(frozen=True)
class ModelConfig:
    # resnet20/32/44/56/110 (CIFAR), resnet18/50 (torchvision), vit_pico/nano/tiny/small/base
    backbone: str = "resnet32"
    width: float = 1.0  # CIFAR ResNets: channel multiplier of 16/32/64
    small_image_stem: bool = True  # torchvision ResNets: 3x3 stride-1 stem, no max-pool
    patch_size: int = 4  # ViTs (vit_pico/nano/tiny/small/base): patch side in pixels
    cls_token: bool = True  # ViTs: a CLS token (else the image feature is the mean patch token)
    drop_path: float = 0.0  # ViTs: stochastic-depth rate of the last block


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "sgd"  # sgd | adamw
    schedule: str = "step"  # step (milestones x gamma) | cosine
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw (MAE: 0.95)
    batch_size: int = 128
    epochs: int = 10
    max_steps: int | None = None  # overrides epochs when set (the paper: 80k iterations)
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of steps
    gamma: float = 0.1
    # linear warm-up over this fraction of the steps (0: none, the paper's recipe). Short CPU
    # recipes need it: at lr 0.1 a few hundred steps from scratch can stall near chance.
    warmup: float = 0.0


@dataclass(frozen=True)
class SLAConfig:
    mode: str = "sla_sd"  # baseline | da | mt | sla | sla_sd
    transform: str = "rotation"  # rotation | rotation2 | color_perm | color_perm_cyclic | a+b
    tau: float = 1.0  # self-distillation temperature


from .methods.byol import BYOLConfig  # noqa: E402  (each method owns its config section)
from .methods.dino import DINOConfig  # noqa: E402
from .methods.mae import MAEConfig  # noqa: E402
from .methods.moco import MoCoConfig  # noqa: E402
from .methods.rotnet import RotNetConfig  # noqa: E402
from .methods.selfpatch import SelfPatchConfig  # noqa: E402
from .methods.simclr import SimCLRConfig  # noqa: E402
from .methods.simsiam import SimSiamConfig  # noqa: E402
from .methods.supervised import SupervisedConfig  # noqa: E402
from .methods.twoview import AugSelfConfig, ProbeConfig, ViewsConfig  # noqa: E402


@dataclass(frozen=True)
class MonitorConfig:
    knn: bool | None = None  # a kNN monitor each validation (None: on for two-view methods)
    k: int = 20
    bank_size: int = 5000  # labelled training images the validation images are compared to
    # the validation score that selects best.pt: val_acc (the classifier or online probe),
    # val_knn_acc, or auto (val_acc when the method has a classifier, else val_knn_acc)
    select: str = "auto"


@dataclass(frozen=True)
class TrainerConfig:
    accelerator: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto | 32-true | bf16-mixed | 16-mixed
    eval_batch_size: int = 512
    log_every_n_steps: int = 20
    checkpoint_every_n_epochs: int = 1
    # also save last.ckpt in the middle of an epoch, after this many minutes since the last save
    # (0: off) or every N steps (0: off), so a killed long epoch loses at most that much work
    checkpoint_every_minutes: float = 10.0
    checkpoint_every_n_steps: int = 0
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    progress: bool = True
    devices: int = 1  # devices (GPUs, or CPU processes with strategy=ddp) of one machine
    strategy: str = "auto"  # auto | ddp (torch.distributed; gloo on CPUs, nccl on GPUs)
    deterministic: bool = True  # deterministic kernels (bit-exact resume on one device)


@dataclass(frozen=True)
class VisionTrainConfig:
    name: str = "sla"
    seed: int = 0
    run_root: str | None = None  # default $SELFSUP_RUNS or ./runs
    method: str = "sla"  # a registered method (`selfsup vision methods`)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sla: SLAConfig = field(default_factory=SLAConfig)
    simclr: SimCLRConfig = field(default_factory=SimCLRConfig)
    moco: MoCoConfig = field(default_factory=MoCoConfig)
    byol: BYOLConfig = field(default_factory=BYOLConfig)
    simsiam: SimSiamConfig = field(default_factory=SimSiamConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)  # masked autoencoder (needs a ViT)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    rotnet: RotNetConfig = field(default_factory=RotNetConfig)
    dino: DINOConfig = field(default_factory=DINOConfig)
    selfpatch: SelfPatchConfig = field(default_factory=SelfPatchConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)  # two-view methods' augmentations
    augself: AugSelfConfig = field(default_factory=AugSelfConfig)  # on any two-view method
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


# ============================================================================ method


def build_model(cfg: VisionTrainConfig, n_classes: int, in_channels: int,
                mean: list[float] | None = None, std: list[float] | None = None,
                image_size: int = 32, total_steps: int = 1):
    """The method ``cfg.method`` built for data of ``n_classes`` and ``in_channels``."""
    from .methods import MethodContext, build_method

    ctx = MethodContext(cfg=cfg, n_classes=n_classes, in_channels=in_channels,
                        image_size=image_size, mean=mean or [0.0] * in_channels,
                        std=std or [1.0] * in_channels, total_steps=total_steps)
    return build_method(cfg.method, ctx)


# ============================================================================ entry points


def _loaders(data, cfg: VisionTrainConfig):
    from torch.utils.data import DataLoader

    from .data import EpochSeededSampler, ResumableLoader
    from .folder import ImagesAndLabels

    bs = min(cfg.optim.batch_size, len(data.train_y))
    w = cfg.data.workers
    train = ResumableLoader(
        ImagesAndLabels(data.train_x, data.train_y), batch_size=bs,
        sampler=EpochSeededSampler(len(data.train_y), cfg.seed), drop_last=True, num_workers=w,
    )
    ebs = cfg.trainer.eval_batch_size
    val = DataLoader(ImagesAndLabels(data.val_x, data.val_y), batch_size=ebs, num_workers=w)
    test = DataLoader(ImagesAndLabels(data.test_x, data.test_y), batch_size=ebs, num_workers=w)
    return train, val, test


def _prepare(cfg: VisionTrainConfig):
    from .data import load_vision_data

    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    d = cfg.data
    data = load_vision_data(
        d.name, root=d.root, path=d.path, image_size=d.image_size, val_size=d.val_size,
        per_class=d.per_class, imbalance_ratio=d.imbalance_ratio, seed=cfg.seed,
        synthetic_size=d.synthetic_size, unlabeled=d.unlabeled, generator_seed=d.generator_seed,
        lazy=d.lazy,
    )
    if cfg.method == "sla" and cfg.sla.mode != "baseline":
        from .label_transforms import build_label_transform

        t = build_label_transform(cfg.sla.transform)
        t.expand(data.train_x[:1].float())  # fail early: e.g. colour permutations on grey images
    return data


def _check_trainer(cfg: VisionTrainConfig) -> None:
    t = cfg.trainer
    if t.checkpoint_every_minutes < 0 or t.checkpoint_every_n_steps < 0:
        raise ConfigError(
            f"trainer.checkpoint_every_minutes={t.checkpoint_every_minutes}, "
            f"trainer.checkpoint_every_n_steps={t.checkpoint_every_n_steps}: use 0 (off) or a "
            "positive number.")
    if t.devices < 1:
        raise ConfigError(f"trainer.devices={t.devices}: use 1 or more.")
    if t.strategy not in ("auto", "ddp"):
        raise ConfigError(f"trainer.strategy={t.strategy!r}: use auto or ddp.")


def _run_fit(run: Run, cfg: VisionTrainConfig, ckpt_path: Path | None, console=None) -> dict:
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from ..device import choose_device
    from .host import AtomicCheckpoint, BestOnValidation, KNNMonitor, RunMetrics, VisionModule

    _check_trainer(cfg)
    t = cfg.trainer
    data = _prepare(cfg)
    train_dl, val_dl, test_dl = _loaders(data, cfg)
    steps_per_epoch = len(train_dl)
    total_steps = cfg.optim.max_steps or steps_per_epoch * cfg.optim.epochs
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    method = build_model(cfg, data.n_classes, data.in_channels, data.mean, data.std,
                         image_size=int(data.train_x.shape[-1]), total_steps=total_steps)
    module = VisionModule(method, cfg.optim, cfg.seed, total_steps)
    dev = choose_device(t.accelerator, t.precision)
    metrics_cb = RunMetrics(run, t.log_every_n_steps)
    mon = cfg.monitor
    use_knn = mon.knn if mon.knn is not None else cfg.method != "sla"
    has_classifier = method.has_classifier()
    select = mon.select if mon.select != "auto" else (
        "val_acc" if has_classifier else "val_knn_acc")
    if select not in ("val_acc", "val_knn_acc"):
        raise ConfigError(f"monitor.select={mon.select!r}: use auto, val_acc or val_knn_acc.")
    if select == "val_knn_acc" and not use_knn:
        raise ConfigError("monitor.select=val_knn_acc needs monitor.knn=true.")
    if select == "val_acc" and not has_classifier:
        raise ConfigError(f"method {cfg.method} has no classifier here (probe.online=false?); "
                          "use monitor.select=val_knn_acc.")
    best_cb = BestOnValidation(run, select)
    ckpt_cb = AtomicCheckpoint(run, t.checkpoint_every_n_epochs, t.checkpoint_every_n_steps,
                               t.checkpoint_every_minutes)
    callbacks: list = [metrics_cb]
    knn_cb = None
    if use_knn:
        labelled = torch.nonzero(data.train_y >= 0).flatten()
        g = torch.Generator().manual_seed(cfg.seed)
        pick = labelled[torch.randperm(len(labelled), generator=g)[: mon.bank_size]].sort()[0]
        knn_cb = KNNMonitor(data.train_x[pick], data.train_y[pick], data.val_x, data.val_y,
                            k=mon.k, batch_size=t.eval_batch_size)
        callbacks.append(knn_cb)
    callbacks += [best_cb, ckpt_cb]
    if t.progress:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=True))
    trainer = L.Trainer(
        accelerator=dev.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=dev.precision,
        max_epochs=-1 if cfg.optim.max_steps else cfg.optim.epochs,
        max_steps=total_steps,
        logger=TensorBoardLogger(run.path, name="tensorboard", version=""),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=t.progress,
        enable_model_summary=False,
        log_every_n_steps=t.log_every_n_steps,
        num_sanity_val_steps=0,
        deterministic=t.deterministic,
        # the training sampler shards itself across processes (EpochSeededSampler); every
        # process evaluates the whole validation and test sets, so their metrics need no sync
        use_distributed_sampler=False,
        default_root_dir=str(run.path),
    )
    log = run.logger()
    log.info("method %s device %s precision %s; data %s", cfg.method, dev.description,
             dev.precision, data.summary())
    if trainer.is_global_zero:
        atomic_write_json(run.path / "data.json", data.summary())
    os.environ[DDP_RUN_ENV] = str(run.path)  # the processes DDP launches join this run
    try:
        trainer.fit(module, train_dl, val_dl, ckpt_path=ckpt_path, weights_only=True)
    finally:
        if trainer.is_global_zero:
            os.environ.pop(DDP_RUN_ENV, None)
    # model selection: test the weights with the best validation score
    if (run.checkpoint_dir / "best.pt").is_file():
        module.model.load_state_dict(safe_torch_load(run.checkpoint_dir / "best.pt"))
    trainer.test(module, test_dl, verbose=False)
    results = {k: round(float(v), 6) for k, v in module.test_results.items()}
    if knn_cb is not None:
        results["test_knn_acc"] = round(knn_cb.accuracy(module, data.test_x, data.test_y), 6)
    results.update(
        selected_by=select,
        best_val_acc=round(best_cb.best, 6),
        best_epoch=best_cb.best_epoch,
        steps=trainer.global_step,
        epochs=trainer.current_epoch,
        epoch_seconds=round(sum(metrics_cb.epoch_seconds) / max(len(metrics_cb.epoch_seconds), 1),
                            4),
        method=cfg.method,
        dataset=cfg.data.name,
        device=dev.description,
        data=data.summary(),
    )
    if cfg.method == "sla":
        results.update(mode=cfg.sla.mode, transform=cfg.sla.transform)
    if trainer.is_global_zero:
        run.finish(results)
    log.info("finished: %s", results)
    return results


DDP_RUN_ENV = "SELFSUP_DDP_RUN"


def _ddp_child_run() -> Run | None:
    """In a process that Lightning's DDP launcher started for rank > 0: the run folder of rank
    0 (passed down in the environment), so all processes share one run."""
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get(DDP_RUN_ENV):
        return Run.open(os.environ[DDP_RUN_ENV])
    return None


def train(config_path: str | None, overrides: list[str], console=None) -> tuple[Run, dict]:
    """Start a new run from a config file and overrides."""
    child = _ddp_child_run()
    if child is not None:
        cfg = load_config(VisionTrainConfig, config_path, overrides)
        return child, _run_fit(child, cfg, None, console)
    from ..device import check_precision

    return start_run("vision.train", VisionTrainConfig, config_path, overrides,
                     lambda run, cfg: _run_fit(run, cfg, None, console),
                     check=lambda cfg: check_precision(cfg.trainer.precision))


def resume(run_path: str | os.PathLike, console=None) -> tuple[Run, dict]:
    """Continue a killed run from its last checkpoint; metrics after it are dropped first.

    A finished run, a run of another command, a damaged config or checkpoint: nothing in the run
    changes (all is checked before the run is marked as running again)."""
    child = _ddp_child_run()
    if child is not None:
        ckpt = child.path / "checkpoints" / "last.ckpt"
        return child, _run_fit(child, child.load_config(VisionTrainConfig),
                               ckpt if ckpt.is_file() else None, console)

    def go_on(run: Run, cfg: VisionTrainConfig, state: dict | None) -> dict:
        run.trim_metrics(int(state["global_step"]) if state is not None else -1)
        ckpt = run.path / "checkpoints" / "last.ckpt" if state is not None else None
        return _run_fit(run, cfg, ckpt, console)

    return resume_run("vision.train", VisionTrainConfig, run_path, go_on,
                      check=lambda run, cfg: run.read_checkpoint("last.ckpt", "global_step"))


def load_selected(run_path: str | os.PathLike):
    """``(run, cfg, model, data)``: a run's selected (best-on-validation) weights in eval mode,
    with its config and data."""
    run = Run.open(run_path)
    cfg = load_config(VisionTrainConfig, base=run.config)
    weights = run.path / "checkpoints" / "best.pt"
    if not weights.is_file():
        raise InputError(f"Run '{run.path}' has no checkpoints/best.pt; train or resume it first.")
    state = safe_torch_load(weights, fix="Train the run again (a new run) to get its weights.")
    data = _prepare(cfg)
    model = build_model(cfg, data.n_classes, data.in_channels, data.mean, data.std,
                        image_size=int(data.train_x.shape[-1]))
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise InputError(f"'{weights}' does not hold weights of this run's model "
                         f"({str(exc).splitlines()[0]}); it was replaced or damaged. Train the "
                         "run again (a new run).") from None
    model.eval()
    return run, cfg, model, data


def eval_batches(data, split: str, batch_size: int):
    """``(normalised images, labels)`` of the test or val split, batch by batch."""
    x_all, y_all = (data.test_x, data.test_y) if split == "test" else (data.val_x, data.val_y)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    for i in range(0, len(y_all), batch_size):
        yield (x_all[i : i + batch_size].float() / 255.0 - mean) / std, y_all[i : i + batch_size]


def evaluate(run_path: str | os.PathLike, split: str = "test") -> dict:
    """Evaluate a run's selected (best-on-validation) weights; writes eval.json into the run."""
    if split not in ("test", "val"):
        raise ConfigError(f"Unknown split '{split}'; use test or val.")
    run, cfg, model, data = load_selected(run_path)
    correct: dict[str, float] = {}
    n = 0
    for x, y in eval_batches(data, split, cfg.trainer.eval_batch_size):
        n += len(y)
        for rule, c in model.eval_counts(x, y).items():
            if rule != "loss":
                correct[rule] = correct.get(rule, 0.0) + c
    out = {f"{split}_{rule}_acc": round(c / n, 6) for rule, c in correct.items()}
    out[f"{split}_acc"] = out[f"{split}_{model.primary_rule()}_acc"]
    atomic_write_json(run.path / "eval.json", out)
    return out
