"""DistillModule: Acc-DD gradient matching as a LightningModule (manual optimisation), around a Distiller.

One training step is one *inner* iteration and ``inner_loop`` of them one *outer* iteration (one
epoch). The work is the :class:`~lightning_dd.distill.distiller.Distiller`'s (pure torch); this
module is the Lightning side: it checks the settings, attaches the data and the pool, builds the
Distiller for the fit's device and processes, logs, checkpoints, and times the matching and the
network update as the trainer profiler's actions ``"matching"`` and ``"network"``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn

from lightning_dd.utils.allocator import tune_cpu_allocator
from lightning_dd.augment import check_strategy, training_augmentation
from lightning_dd.classify import TrainSchedule
from lightning_dd.data.real import RealData
from lightning_dd.data.sources import DatasetInfo
from lightning_dd.distill.checks import check_module_numbers, check_settings_against_data, check_settings_alone
from lightning_dd.distill.distiller import Distiller, Placement
from lightning_dd.distill.image_step import image_step_for
from lightning_dd.distill.matching import METRICS
from lightning_dd.distill.network import MatchNetwork
from lightning_dd.distill.pool import EarlyStagePool, PoolConfig
from lightning_dd.distill.resume import check_resume
from lightning_dd.distill.settings import CLAMPS, MATCHES, MODEL_SOURCES, DistillSettings, Perturbation
from lightning_dd.distill.state import DistillState
from lightning_dd.distill.strategy import build_pool, check_processes, sum_across_processes
from lightning_dd.distill.synthetic import INITS, MIX_DOWNSAMPLES, SyntheticSet
from lightning_dd.utils.errors import ConfigError, choose
from lightning_dd.utils.hardware import cpu_bf16_units
from lightning_dd.nets.spec import NetSpec
from lightning_dd.preflight import preflight_fit
from lightning_dd.utils.validation import defaults_of


class DistillModule(LightningModule):
    """Learns ``ipc`` synthetic images per class by gradient matching (IDC) on augmented models (Acc-DD).

    Paper: Zhang et al., "Accelerating Dataset Distillation via Model Augmentation", CVPR 2023,
    https://arxiv.org/abs/2212.06152 ; IDC: Kim et al., ICML 2022, https://arxiv.org/abs/2205.14959 .

    Only the synthetic images are parameters; network weights live outside the module tree.
    Needs a datamodule with ``info`` and ``train_data`` (:class:`~lightning_dd.data.RealDataModule`).

    Args:
        ipc: stored synthetic images per class.
        factor: multi-formation factor (2 for 28-32 px, 3 for ImageNet-size, 1 = none).
        init: ``mix`` (f*f real images per stored image), ``real`` or ``noise``.
        mix_downsample: how ``mix`` shrinks a real image into a tile: ``nearest`` (the authors'
            code) or ``antialias`` (bilinear with antialiasing, lightning-dd's earlier default).
        net: the network matched on.
        model_source: ``pool`` (Acc-DD: early-stage pool) or ``random`` (IDC: fresh networks).
        pool: early-stage pool settings (used when ``model_source="pool"``).
        perturb: perturb each drawn network along filter-normalised random directions.
        rho_min, rho_max: range of the perturbation magnitudes.
        outer_iterations: number of networks drawn (outer iterations).
        inner_loop: matching steps per network.
        batch_real: real images per class per step.
        max_syn_per_class: at most this many decoded synthetic images per class are matched per step.
        metric: gradient distance ``mse``, ``l1`` or ``cos``.
        match: ``grad`` (gradient matching: DC, DSA, IDC, Acc-DD) or ``embed`` (distribution
            matching, DM: mean embeddings of real and synthetic batches; use with random
            networks, ``inner_loop=1`` and ``n_data=0``).
        match_bias, match_head: also match 1-D parameters / the classifier head.
        augment: DSA transforms, one shared draw per class for matching (all listed transforms); per
            image for the net update, there with ``net_spatial`` and ``net_cutout_with_cutmix``.
        lr_img: synthetic-image learning rate (before ``ipc / 10`` scaling).
        momentum_img: synthetic-image SGD momentum.
        scale_lr_with_ipc: multiply ``lr_img`` by ``ipc / 10`` (per-image gradients shrink as 1/ipc).
        n_data: real images the network is trained on after every inner step (0 = no update).
        net_lr, net_momentum, net_weight_decay, net_batch_size: SGD of that update;
            ``net_batch_size=None`` uses ``batch_real`` (the authors' code iterates its real
            loader, whose batch is ``batch_real``, until ``n_data`` images are seen).
        net_whole_batches: the update runs whole minibatches, ``ceil(n_data / batch) * batch``
            images (512 for 500 in batches of 64): the authors' loop stops once ``n_data`` images
            have been seen. False: exactly ``n_data`` images, the last batch smaller (earlier).
        net_cutmix_p: CutMix probability in that update.
        net_spatial: ``single`` (the authors' code: colour plus ONE of the strategy's crop / scale /
            rotate per minibatch) or ``all`` (every transform on every minibatch).
        net_cutout_with_cutmix: keep ``cutout`` in the update's augmentation although CutMix is on
            (the authors' code removes it: False).
        clamp: ``per_outer`` clamps pixels to [0, 1] when an outer iteration begins (the authors'
            code); ``per_step`` also after every image step.
        image_step: ``per_class`` zeroes the image gradients, back-propagates and steps the image
            optimiser once per class (the authors' code; with momentum, a class's step also moves
            the other classes' images along their momentum); ``per_iteration`` sums every class's
            gradient and steps once per inner iteration.
        per_class_impl: how ``image_step="per_class"`` runs: ``replay`` takes every class's
            gradient at the state the loop would give it (grouped on CUDA, sharded across
            processes) and replays the loop's updates element-wise (:mod:`lightning_dd.distill.replay`:
            same result up to float rounding); ``loop`` is the loop itself, one class per pass
            and one process.
        precision: ``32`` (exact) or ``bf16`` (bfloat16 autocast for the network's convolutions in
            matching and in its update, distances stay fp32). Only CPUs with bf16 units (AVX512-BF16,
            AMX) gain from it: on 2 cores of an AMX Xeon it measured 1.36-1.52x faster than fp32 with
            digits sets as accurate; it is far slower on an AVX2 CPU (a warning says so) and no
            faster on an H200, whose matching step is not bound by arithmetic (docs/benchmarks.md).
        seed: seeds every random choice of distillation (batches, augmentation, networks).
        tune_cpu_allocator: on the CPU, raise glibc's malloc thresholds so large temporaries are
            reused instead of page-faulted in afresh (:mod:`lightning_dd.utils.allocator`; process-wide).
        classes_per_pass: classes matched together in one grouped pass
            (:mod:`lightning_dd.distill.grouped`; ConvNet with instance or no norm, gradient
            matching, not with ``per_class_impl="loop"``). ``None`` picks per device: 10 on CUDA,
            where the per-class loop is bound by kernel launches, and 1 (the plain loop) on the CPU,
            where it is not and memory is scarcer.

    Example:
        >>> from lightning_dd.data import RealDataModule
        >>> import lightning as L
        >>> module = DistillModule(ipc=1, factor=1, outer_iterations=2, inner_loop=5)
        >>> L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False).fit(module, datamodule=RealDataModule("digits"))
    """

    def __init__(
        self,
        ipc: int = 10,
        factor: int = 2,
        init: Literal["mix", "real", "noise"] = "mix",
        mix_downsample: Literal["nearest", "antialias"] = "nearest",
        net: NetSpec = NetSpec(),
        model_source: Literal["pool", "random"] = "pool",
        pool: PoolConfig = PoolConfig(),
        perturb: bool = Perturbation.enabled,
        rho_min: float = Perturbation.rho_min,
        rho_max: float = Perturbation.rho_max,
        outer_iterations: int = 200,
        inner_loop: int = 100,
        batch_real: int = 64,
        max_syn_per_class: int = 128,
        metric: Literal["mse", "l1", "cos"] = "mse",
        match: Literal["grad", "embed"] = "grad",
        match_bias: bool = False,
        match_head: bool = False,
        augment: str = "color_crop_cutout",
        lr_img: float = 1e-2,
        momentum_img: float = 0.5,
        scale_lr_with_ipc: bool = True,
        n_data: int = 500,
        net_lr: float = TrainSchedule.lr,
        net_momentum: float = TrainSchedule.momentum,
        net_weight_decay: float = TrainSchedule.weight_decay,
        net_batch_size: int | None = None,
        net_whole_batches: bool = True,
        net_cutmix_p: float = TrainSchedule.cutmix_p,
        net_spatial: Literal["single", "all"] = "single",
        net_cutout_with_cutmix: bool = TrainSchedule.cutout_with_cutmix,
        clamp: Literal["per_outer", "per_step"] = "per_outer",
        image_step: Literal["per_class", "per_iteration"] = "per_class",
        per_class_impl: Literal["replay", "loop"] = "replay",
        precision: Literal["32", "bf16"] = "32",
        seed: int = 0,
        tune_cpu_allocator: bool = True,
        classes_per_pass: int | None = None,
    ) -> None:
        super().__init__()
        # Plain dicts arrive when hyper-parameters are restored from a checkpoint or YAML.
        self.net_spec = NetSpec(**net) if isinstance(net, dict) else net
        self.pool_config = PoolConfig(**pool) if isinstance(pool, dict) else pool
        for name, value, allowed in (("init", init, INITS), ("mix_downsample", mix_downsample, MIX_DOWNSAMPLES), ("model_source", model_source, MODEL_SOURCES),
                                     ("metric", metric, METRICS), ("match", match, MATCHES), ("precision", precision, ("32", "bf16")), ("clamp", clamp, CLAMPS)):  # fmt: skip
            choose(name, value, allowed)
        self.image_step = image_step_for(image_step, per_class_impl, clamp_each_step=clamp == "per_step")
        check_strategy("model.augment", augment)
        training_augmentation(augment, spatial=net_spatial)
        self.image_step.check_classes_per_pass(classes_per_pass)
        self.save_hyperparameters(
            ignore=["net", "pool"]
        )  # stored as plain dicts: checkpoints load with weights_only=True
        check_module_numbers(self.hparams, "", defaults_of(type(self).__init__))
        self.hparams["net"], self.hparams["pool"] = self.net_spec.to_dict(), asdict(self.pool_config)
        self.settings = DistillSettings.of(self.hparams)
        self.automatic_optimization = False
        self.synthetic: SyntheticSet | None = None
        self.info: DatasetInfo | None = None
        self.pool: EarlyStagePool | None = None
        self.network: MatchNetwork | None = None  # set when data is attached (its shapes are needed)
        self.distiller: Distiller | None = None  # built for each fit, when its device and processes are known
        self.state = DistillState()  # position, random stream, current network: all of it goes into checkpoints
        self.validated = False  # preflight_fit passed for the current fit (the CLI runs it before fit)
        self.interrupted = False  # set by CheckpointOnInterrupt: evaluation is skipped, export still happens
        self._real: RealData | None = None
        self._outer_loss: torch.Tensor | None = None  # the mean loss of the outer iteration the latest step ended
        self._outer_started = 0.0

    # ------------------------------------------------------------------ what callbacks and benchmarks read
    @property
    def outer(self) -> int:
        """Outer iterations done."""
        return self.state.outer

    @property
    def inner(self) -> int:
        """Inner iterations done in the current outer iteration."""
        return self.state.inner

    @property
    def member(self) -> int:
        """The pool member drawn for the current outer iteration (-1: a fresh network)."""
        return self.state.member

    @property
    def finished_outer(self) -> bool:
        """Whether the latest training step ended an outer iteration (evaluation and export callbacks act then)."""
        return self._outer_loss is not None

    @property
    def net_batch(self) -> int:
        """Minibatch size of the network update (``net_batch_size``, or ``batch_real`` when unset)."""
        return self.settings.update.batch

    @property
    def update_images(self) -> int:
        """Real images the network trains on after each matching step (``n_data``, rounded up to whole batches with ``net_whole_batches``)."""
        return self.settings.update.images

    @property
    def effective_lr_img(self) -> float:
        hp = self.hparams
        return hp.lr_img * (hp.ipc / 10.0 if hp.scale_lr_with_ipc else 1.0)

    @property
    def matched_names(self) -> tuple[str, ...]:
        """Names of the network parameters whose gradients are matched (conv weights by default; empty before data is attached)."""
        return () if self.network is None else tuple(self.network.matched)

    @property
    def rank_classes(self) -> range:
        """Classes matched by this process (classes are sharded across DDP ranks)."""
        assert self.info is not None
        return range(self.global_rank, self.info.num_classes, self.trainer.world_size)

    @property
    def steps_per_epoch(self) -> int:
        """Read by RealDataModule: one epoch is one outer iteration (real batches are sampled on device)."""
        return self.hparams.inner_loop

    # ------------------------------------------------------------------ checks
    def check_settings(self) -> None:
        """Start-up checks without data (asked by :func:`~lightning_dd.preflight.preflight_fit`): numbers, the pool cache folder."""
        check_settings_alone(self.hparams, self.pool_config, self.net_spec, defaults_of(type(self).__init__))

    def check_data(self, trainer, info: DatasetInfo, train: RealData, test: RealData | None) -> None:
        """Start-up checks against the data and the trainer: class counts, factor, network, classes per pass, processes."""
        check_settings_against_data(self.hparams, self.net_spec, self.image_step, info, train, test)
        check_processes(trainer, self.image_step)

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "train_data") or not hasattr(datamodule, "info"):
            raise ConfigError(
                "DistillModule needs a RealDataModule: call trainer.fit(module, datamodule=RealDataModule(...))"
            )
        if not self.validated:  # the Python API gets the CLI's start-up checks too, before any pool work
            preflight_fit(self.trainer, self, datamodule)
            self.validated = True
        check_processes(self.trainer, self.image_step)
        on_cpu = self.trainer.strategy.root_device.type == "cpu"
        if self.hparams.tune_cpu_allocator and on_cpu:
            tune_cpu_allocator()
        if self.hparams.precision == "bf16" and on_cpu and not cpu_bf16_units():
            rank_zero_warn(
                "precision='bf16' on a CPU without bf16 instructions (AVX512-BF16 or AMX): bf16 is emulated there and much slower than fp32; use precision='32'"
            )
        datamodule.setup(stage)
        self.attach_data(datamodule.info, datamodule.train_data)
        if self.hparams.model_source == "pool" and self.pool is None:  # a pool handed in before fit is kept
            self.pool = build_pool(self.trainer, self.net_spec, self.pool_config, self._real, self.hparams.seed)

    def teardown(self, stage: str) -> None:
        """A later fit, perhaps under another Trainer, is checked again."""
        self.validated = False

    def attach_data(self, info: DatasetInfo, real: RealData) -> None:
        """Build the synthetic set and the network for ``info`` and initialise the images from ``real``."""
        hp, state = self.hparams, self.state
        self.info, self._real = info, real
        if state.generator is None:
            state.generator = torch.Generator().manual_seed(hp.seed)
        if self.synthetic is None:
            self.synthetic = SyntheticSet(info.num_classes, hp.ipc, info.channels, info.image_size, hp.factor)
            self.synthetic.initialize(hp.init, real, state.generator, hp.mix_downsample)
        elif (
            self.synthetic.images.shape[1:] != (info.channels, *info.image_size)
            or self.synthetic.num_classes != info.num_classes
        ):
            raise ConfigError(
                f"the synthetic set has shape {tuple(self.synthetic.images.shape)} but dataset {info.name!r} has {info.num_classes} classes of {info.channels}x{info.image_size[0]}x{info.image_size[1]}"
            )
        self.network = MatchNetwork.build(self.net_spec, info, hp.seed, hp.match_bias, hp.match_head)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        assert self.synthetic is not None
        return torch.optim.SGD(
            self.synthetic.parameters(), lr=self.effective_lr_img, momentum=self.hparams.momentum_img
        )

    def build_distiller(self) -> Distiller:
        """The Distiller of this fit: the attached data on the module's device, this process's classes, the cross-process sum."""
        if self.synthetic is None or self.info is None or self.network is None or self._real is None:
            raise RuntimeError("no data is attached: call attach_data, or trainer.fit with a RealDataModule")
        hp, several = self.hparams, self.trainer.world_size > 1
        chunk = self.image_step.classes_per_pass(
            hp.classes_per_pass, self.network.grouped is not None, hp.match, self.net_spec, self.device.type
        )
        placement = Placement(self.device, self.rank_classes, chunk, sum_across_processes if several else None)
        return Distiller(
            self.settings,
            self.state,
            self.synthetic,
            self._real,
            self.info,
            self.network,
            self.pool,
            self.image_step,
            placement,
        )

    def on_fit_start(self) -> None:
        self.distiller = self.build_distiller()
        self.image_step.check_optimizer(self.optimizers(use_pl_optimizer=False))
        # One epoch is one outer iteration: the trainer's epoch limit is the module's, whatever the
        # Trainer was built with (progress bars then read "Epoch k/outer_iterations - 1").
        self.trainer.fit_loop.max_epochs = self.hparams.outer_iterations

    # ------------------------------------------------------------------ distillation
    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One inner iteration: (begin an outer iteration,) match and step the images, update the network, log."""
        self._outer_loss = None
        if self.outer >= self.hparams.outer_iterations:
            self.trainer.should_stop = True
            return None
        distiller, profiler = self.distiller, self.trainer.profiler
        if self.inner == 0:
            distiller.begin_outer()
            self._outer_started = time.perf_counter()
        with profiler.profile("matching"):
            loss = distiller.matching_step(self.optimizers(), self.manual_backward)
        with profiler.profile("network"):
            distiller.network_step()
        self.log("distill/match_loss", loss, on_step=True, prog_bar=True, rank_zero_only=True)
        self._outer_loss = distiller.end_inner(loss)  # raises DivergenceError after a rollback
        if self._outer_loss is not None:
            self.log("distill/outer_loss", self._outer_loss, on_step=True, rank_zero_only=True)
            self.log(
                "distill/seconds_per_outer",
                time.perf_counter() - self._outer_started,
                on_step=True,
                rank_zero_only=True,
            )
            if self.outer >= self.hparams.outer_iterations:
                self.trainer.should_stop = True
        return None

    # ------------------------------------------------------------------ results
    @torch.no_grad()
    def distilled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored synthetic images (clamped to [0, 1], CPU) and their labels."""
        assert self.synthetic is not None
        return self.synthetic.images.detach().clamp(0, 1).cpu(), self.synthetic.labels.cpu()

    @torch.no_grad()
    def decoded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoded training images (pixels in [0, 1], CPU) and labels."""
        assert self.synthetic is not None
        return self.synthetic.decoded_images().detach().clamp(0, 1).cpu(), self.synthetic.decoded_labels().cpu()

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lightning_dd"] = self.state.checkpoint()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Continue the checkpoint's run, refusing settings it did not run with.

        Lightning calls this for every resume, so the one rule of :func:`check_resume` guards
        ``trainer.fit(module, ckpt_path=...)`` as well as ``lightning-dd fit --ckpt_path`` (whose
        CLI has merged the checkpoint's settings and applied the safe changes by now). The data
        module checks the data itself (``RealDataModule.load_state_dict``).
        """
        saved = checkpoint.get("lightning_dd")
        if saved is None:
            raise ConfigError("this checkpoint was not written by lightning-dd's DistillModule")
        check_resume(dict(self.hparams), checkpoint)
        self._ensure_synthetic(checkpoint["state_dict"])
        self.state.restore(
            saved
        )  # a network in mid-iteration is placed on the device when the fit's Distiller is built
        self._outer_started = time.perf_counter()

    def _ensure_synthetic(self, state_dict: dict[str, Any]) -> None:
        """Create the synthetic set from a state dict's shapes when no data was attached."""
        images = state_dict.get("synthetic.images")
        if self.synthetic is None and images is not None:
            classes = int(state_dict["synthetic.labels"].max()) + 1
            self.synthetic = SyntheticSet(
                classes, self.hparams.ipc, images.shape[1], tuple(images.shape[2:]), self.hparams.factor
            )

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # load_from_checkpoint and DDP-spawn result recovery load weights into a module that never saw data.
        self._ensure_synthetic(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
