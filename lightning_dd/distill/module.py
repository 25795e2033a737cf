"""DistillModule: Acc-DD gradient matching as a LightningModule (manual optimisation).

One Lightning training step is one *inner* iteration; ``inner_loop`` steps form one *outer*
iteration, which starts by drawing a network (a perturbed early-stage pool member in Acc-DD
mode, a fresh random network in IDC mode). Each inner step matches gradients class by class,
steps the synthetic images (after every class by default, as the authors' code), and then trains
the network on ``n_data`` real images in minibatches of ``batch_real``.

The step after every class runs, by default, as a replay (:mod:`lightning_dd.distill.replay`):
every class's gradient is taken at the state the authors' loop would give it, in one grouped pass
(CUDA) or spread over processes, and the loop's C updates are then replayed element-wise. Class c's
loss depends only on class c's images, which move only by momentum (and the clamp) while other
classes are stepped, so this is the loop's result up to float rounding; ``per_class_impl="loop"``
keeps the loop itself as the reference.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Literal, Mapping

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_dd.allocator import tune_cpu_allocator
from lightning_dd.hardware import cpu_bf16_units
from lightning_dd.data.real import Normalizer, RealData
from lightning_dd.data.sources import DatasetInfo
from lightning_dd.augment import DSA, augmented_loss, check_strategy, training_augmentation
from lightning_dd.distill.functional_net import FunctionalNet
from lightning_dd.distill.grouped import GroupedConvNet, check_grouped_pass, default_classes_per_pass, grouped_matching_loss, supports_grouped
from lightning_dd.distill.matching import METRICS, class_embedding_loss, class_matching_loss, matched_parameter_names
from lightning_dd.distill.pool import EarlyStagePool, PoolConfig, perturb
from lightning_dd.distill.replay import SGDRule, moments, replay
from lightning_dd.distill.resume import check_resume
from lightning_dd.distill.strategy import DistillDDPStrategy
from lightning_dd.distill.synthetic import INITS, MIX_DOWNSAMPLES, SyntheticSet, check_factor
from lightning_dd.errors import ConfigError, DivergenceError, choose
from lightning_dd.nets.spec import NetSpec, head_parameter_names
from lightning_dd.preflight import preflight_fit
from lightning_dd.validation import check_class_counts, check_net_fits, check_numbers, check_rho, check_writable_dir, defaults_of, fields_of

MODEL_SOURCES = ("pool", "random")
MATCHES = ("grad", "embed")
CLAMPS = ("per_outer", "per_step")
IMAGE_STEPS = ("per_class", "per_iteration")
PER_CLASS_IMPLS = ("replay", "loop")


def check_processes(trainer, image_step: str | None, per_class_impl: str | None) -> None:
    """What several processes need, refused in one sentence (the start-up checks and ``setup`` share it).

    DDP's wrapper cannot differentiate through gradients, and the per-class loop steps after
    every class, which no process can do when each holds other classes (the replay can).
    """
    if trainer.world_size <= 1:
        return
    if not isinstance(trainer.strategy, DistillDDPStrategy):
        raise ConfigError("multi-process distillation needs trainer.strategy=ddp_distill (or ddp_distill_spawn): DDP's wrapper cannot differentiate through gradients")
    if image_step == "per_class" and per_class_impl == "loop":
        raise ConfigError("model.per_class_impl=loop cannot run on several processes (each holds other classes, so none can step after every class); set model.per_class_impl=replay, which gives the same per-class steps")


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
            reused instead of page-faulted in afresh (:mod:`lightning_dd.allocator`; process-wide).
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
        perturb: bool = True,
        rho_min: float = 0.01,
        rho_max: float = 0.09,
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
        net_lr: float = 0.01,
        net_momentum: float = 0.9,
        net_weight_decay: float = 5e-4,
        net_batch_size: int | None = None,
        net_whole_batches: bool = True,
        net_cutmix_p: float = 0.5,
        net_spatial: Literal["single", "all"] = "single",
        net_cutout_with_cutmix: bool = False,
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
        choose("init", init, INITS)
        choose("mix_downsample", mix_downsample, MIX_DOWNSAMPLES)
        choose("model_source", model_source, MODEL_SOURCES)
        choose("metric", metric, METRICS)
        choose("match", match, MATCHES)
        choose("precision", precision, ("32", "bf16"))
        choose("clamp", clamp, CLAMPS)
        choose("image_step", image_step, IMAGE_STEPS)
        choose("per_class_impl", per_class_impl, PER_CLASS_IMPLS)
        check_strategy("model.augment", augment)
        training_augmentation(augment, spatial=net_spatial)
        if image_step == "per_class" and per_class_impl == "loop" and classes_per_pass is not None and classes_per_pass > 1:
            raise ConfigError(f"per_class_impl='loop' steps the images after every class, so classes_per_pass must be 1 (got {classes_per_pass}); use per_class_impl='replay' to match several classes per pass")
        # Stored as plain dicts so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["net", "pool"])
        # Number ranges come from one table (lightning_dd.validation.RULES), the CLI's too.
        check_numbers({k: v for k, v in self.hparams.items() if not isinstance(v, Mapping)}, "", defaults=defaults_of(type(self).__init__))
        check_rho(rho_min, rho_max)
        self.hparams["net"] = self.net_spec.to_dict()
        self.hparams["pool"] = asdict(self.pool_config)
        self.automatic_optimization = False
        self.synthetic: SyntheticSet | None = None
        self.info: DatasetInfo | None = None
        self.pool: EarlyStagePool | None = None
        self.validated = False  # preflight_fit passed for the current fit (the CLI runs it before fit)
        # Seconds spent in matching and in the network update since this object was built (benchmarks
        # read them); sync_part_timing makes them wait for CUDA kernels, at some cost in overlap.
        self.part_seconds = {"matching": 0.0, "network": 0.0}
        self.sync_part_timing = False
        self._matched: list[str] = []  # set when data is attached (the network's shapes are needed)
        self._net: FunctionalNet | None = None
        self._real: RealData | None = None
        self._normalizer: Normalizer | None = None
        self._grouped: GroupedConvNet | None = None
        self._chunk = 1  # classes per matching pass, fixed in on_fit_start
        # Created in attach_data, not here: a module holding no tensors pickles cleanly to
        # spawned DDP workers (some sandboxes cannot share tensors through file descriptors).
        self._generator: torch.Generator | None = None
        # Position and per-network state; all of it goes into checkpoints.
        self.outer = 0
        self.inner = 0
        self.member = -1
        self._weights: dict[str, torch.Tensor] | None = None
        self._net_optimizer: torch.optim.SGD | None = None
        self._loss_sum: torch.Tensor | None = None
        self._good_images: torch.Tensor | None = None
        self._outer_started = 0.0
        self._restored: tuple[dict, dict] | None = None
        self.finished_outer = False
        self.interrupted = False  # set by CheckpointOnInterrupt: evaluation is skipped, export still happens

    # ------------------------------------------------------------------ set-up
    @property
    def net_batch(self) -> int:
        """Minibatch size of the network update (``net_batch_size``, or ``batch_real`` when unset)."""
        hp = self.hparams
        return hp.batch_real if hp.net_batch_size is None else hp.net_batch_size

    @property
    def effective_lr_img(self) -> float:
        hp = self.hparams
        return hp.lr_img * (hp.ipc / 10.0 if hp.scale_lr_with_ipc else 1.0)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "train_data") or not hasattr(datamodule, "info"):
            raise ConfigError("DistillModule needs a RealDataModule: call trainer.fit(module, datamodule=RealDataModule(...))")
        if not self.validated:  # the Python API gets the CLI's start-up checks too, before any pool work
            preflight_fit(self.trainer, self, datamodule)
            self.validated = True
        check_processes(self.trainer, self.hparams.image_step, self.hparams.per_class_impl)
        on_cpu = self.trainer.strategy.root_device.type == "cpu"
        if self.hparams.tune_cpu_allocator and on_cpu:
            tune_cpu_allocator()
        if self.hparams.precision == "bf16" and on_cpu and not cpu_bf16_units():
            rank_zero_warn("precision='bf16' on a CPU without bf16 instructions (AVX512-BF16 or AMX): bf16 is emulated there and much slower than fp32; use precision='32'")
        datamodule.setup(stage)
        self.attach_data(datamodule.info, datamodule.train_data)
        if self.hparams.model_source == "pool" and self.pool is None:  # a pool handed in before fit is kept
            self.pool = self._build_pool()

    def check_settings(self) -> None:
        """Start-up checks without data (asked by :func:`~lightning_dd.preflight.preflight_fit`): numbers, the pool cache folder."""
        hp = dict(self.hparams)
        check_numbers({k: v for k, v in hp.items() if not isinstance(v, Mapping)}, "model", defaults=defaults_of(type(self).__init__))
        check_rho(hp.get("rho_min"), hp.get("rho_max"))
        check_numbers(fields_of(self.pool_config), "model.pool", defaults=defaults_of(type(self.pool_config)))
        check_numbers(fields_of(self.net_spec), "model.net")
        if hp.get("model_source") == "pool":
            check_writable_dir(self.pool_config.cache_dir, "model.pool.cache_dir")

    def check_data(self, trainer, info: DatasetInfo, train: RealData, test: RealData | None) -> None:
        """Start-up checks against the data and the trainer: class counts, the factor and network against the image size, processes."""
        hp = self.hparams
        check_class_counts(info, train, hp.ipc, hp.batch_real, test)
        try:
            check_factor(int(hp.factor), info.image_size)
        except ConfigError as err:
            raise ConfigError(f"model.{err}") from None
        check_net_fits(self.net_spec, info.channels, info.num_classes, info.image_size, "model.net")
        check_processes(trainer, hp.image_step, hp.per_class_impl)
        if hp.classes_per_pass is not None and hp.classes_per_pass > 1:
            with torch.random.fork_rng(devices=[]):
                template = self.net_spec.build(info.channels, info.num_classes, info.image_size)
            check_grouped_pass(hp.classes_per_pass, supports_grouped(template), hp.match, self.net_spec.name, self.net_spec.norm)

    def teardown(self, stage: str) -> None:
        """A later fit, perhaps under another Trainer, is checked again."""
        self.validated = False

    def attach_data(self, info: DatasetInfo, real: RealData) -> None:
        """Build the synthetic set and network template for ``info`` and initialise the images from ``real``."""
        hp = self.hparams
        self.info, self._real = info, real
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(hp.seed)
        if self.synthetic is None:
            self.synthetic = SyntheticSet(info.num_classes, hp.ipc, info.channels, info.image_size, hp.factor)
            self.synthetic.initialize(hp.init, real, self._generator, hp.mix_downsample)
        elif self.synthetic.images.shape[1:] != (info.channels, *info.image_size) or self.synthetic.num_classes != info.num_classes:
            raise ConfigError(f"the synthetic set has shape {tuple(self.synthetic.images.shape)} but dataset {info.name!r} has {info.num_classes} classes of {info.channels}x{info.image_size[0]}x{info.image_size[1]}")
        template = self.net_spec.build_seeded(hp.seed, info.channels, info.num_classes, info.image_size)
        self._net = FunctionalNet(template)
        self._grouped = GroupedConvNet(template) if supports_grouped(template) else None
        shapes = {n: p.shape for n, p in template.named_parameters()}
        self._matched = matched_parameter_names(shapes, head_parameter_names(template), hp.match_bias, hp.match_head)
        if not self._matched:
            raise ConfigError("no parameters are matched; enable match_bias or match_head for this network")
        self._dsa = DSA(hp.augment, flip_ok=info.flip_ok)
        self._net_dsa = training_augmentation(hp.augment, info.flip_ok, hp.net_spatial, hp.net_cutmix_p, hp.net_cutout_with_cutmix)

    def _build_pool(self) -> EarlyStagePool:
        hp, strategy = self.hparams, self.trainer.strategy
        device = strategy.root_device
        real = self._real
        assert real is not None
        if self.trainer.is_global_zero:
            rank_zero_info(f"lightning-dd: early-stage pool of {self.pool_config.size} nets, {self.pool_config.epochs} epoch(s) each (cached under {self.pool_config.cache_dir})")
            pool = EarlyStagePool.build_or_load(self.net_spec, self.pool_config, real, hp.seed, device)
        strategy.barrier("lightning_dd_pool")
        if not self.trainer.is_global_zero:
            pool = EarlyStagePool.build_or_load(self.net_spec, self.pool_config, real, hp.seed, device, progress=False)
        return pool

    def configure_optimizers(self) -> torch.optim.Optimizer:
        assert self.synthetic is not None
        return torch.optim.SGD(self.synthetic.parameters(), lr=self.effective_lr_img, momentum=self.hparams.momentum_img)

    @property
    def steps_per_epoch(self) -> int:
        """Read by RealDataModule: one epoch is one outer iteration (real batches are sampled on device)."""
        return self.hparams.inner_loop

    def on_fit_start(self) -> None:
        assert self._real is not None and self._net is not None and self.info is not None
        self._real.to(self.device)
        self._net.to(self.device)
        self._normalizer = Normalizer(self.info.mean, self.info.std, self.device)
        self._chunk = self._classes_per_pass()
        if self._restored is not None:  # resumed in the middle of an outer iteration
            weights, optimizer_state = self._restored
            self._weights = self._net.clone_weights(weights, self.device)
            self._net_optimizer = self._new_net_optimizer(optimizer_state)
            self._restored = None
        if self._good_images is not None:
            self._good_images = self._good_images.to(self.device)
        # One epoch is one outer iteration: the trainer's epoch limit is the module's, whatever the
        # Trainer was built with (progress bars then read "Epoch k/outer_iterations - 1").
        self.trainer.fit_loop.max_epochs = self.hparams.outer_iterations

    # ------------------------------------------------------------- distillation
    @property
    def rank_classes(self) -> range:
        """Classes matched by this process (classes are sharded across DDP ranks)."""
        assert self.info is not None
        return range(self.global_rank, self.info.num_classes, self.trainer.world_size)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.finished_outer = False
        if self.outer >= self.hparams.outer_iterations:
            self.trainer.should_stop = True
            return None
        if self.inner == 0:
            self._begin_outer()
        with self._autocast():
            started = self._part_clock()
            loss = self._matching_step()
            matched = self._part_clock()
            self._network_step()
            self.part_seconds["matching"] += matched - started
            self.part_seconds["network"] += self._part_clock() - matched
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self.log("distill/match_loss", loss, on_step=True, prog_bar=True, rank_zero_only=True)
        self.inner += 1
        if self.inner == self.hparams.inner_loop:
            self._end_outer()
        return None

    def _part_clock(self) -> float:
        """``perf_counter`` for :attr:`part_seconds`; with :attr:`sync_part_timing` on CUDA, after the queued kernels ran."""
        if self.sync_part_timing and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @property
    def matched_names(self) -> tuple[str, ...]:
        """Names of the network parameters whose gradients are matched (conv weights by default; empty before data is attached)."""
        return tuple(self._matched)

    @property
    def update_images(self) -> int:
        """Real images the network trains on after each matching step (``n_data``, rounded up to whole batches with ``net_whole_batches``)."""
        hp = self.hparams
        return -(-hp.n_data // self.net_batch) * self.net_batch if hp.net_whole_batches else hp.n_data

    def _autocast(self):
        """bf16 autocast on the module's device when ``precision="bf16"``, else a no-op context."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.hparams.precision == "bf16")

    def _begin_outer(self) -> None:
        hp = self.hparams
        assert self.synthetic is not None and self._net is not None and self.info is not None
        self.synthetic.clamp_()
        self._good_images = self.synthetic.images.detach().clone()
        if hp.model_source == "pool":
            assert self.pool is not None
            self.member = self.pool.draw(self._generator)
            state = self.pool.members[self.member]
        else:
            self.member = -1
            seed = int(torch.randint(2**31 - 1, (1,), generator=self._generator).item())
            state = self.net_spec.build_seeded(seed, self.info.channels, self.info.num_classes, self.info.image_size).state_dict()
        if hp.perturb:
            params, buffers = self._net.split(state)
            state = {**perturb(params, hp.rho_min, hp.rho_max, self._generator), **buffers}
        self._weights = self._net.clone_weights(state, self.device)
        self._net_optimizer = self._new_net_optimizer()
        self._loss_sum = None
        self._outer_started = time.perf_counter()

    def _classes_per_pass(self) -> int:
        hp = self.hparams
        if hp.classes_per_pass is None:
            grouped_ok = self._grouped is not None and hp.match == "grad" and not self._steps_per_class
            return default_classes_per_pass(self.device.type) if grouped_ok else 1
        check_grouped_pass(hp.classes_per_pass, self._grouped is not None, hp.match, self.net_spec.name, self.net_spec.norm)
        return hp.classes_per_pass

    def _new_net_optimizer(self, state: dict | None = None) -> torch.optim.SGD:
        assert self._net is not None and self._weights is not None
        hp = self.hparams
        optimizer = torch.optim.SGD(self._net.parameters_of(self._weights), lr=hp.net_lr, momentum=hp.net_momentum, weight_decay=hp.net_weight_decay)
        if state is not None:
            optimizer.load_state_dict(state)
        return optimizer

    @property
    def _steps_per_class(self) -> bool:
        """Whether the image optimiser steps after every class inside the matching loop (the reference loop)."""
        return self.hparams.image_step == "per_class" and self.hparams.per_class_impl == "loop"

    def _matching_step(self) -> torch.Tensor:
        """Match every class of this rank and step the synthetic images (per class or once)."""
        hp = self.hparams
        assert self.synthetic is not None and self._real is not None and self._net is not None and self._weights is not None and self._normalizer is not None
        num_classes = self.info.num_classes
        real = self._real.class_balanced_batch(hp.batch_real, self._generator)
        draws = self._dsa.sample(num_classes, self._generator).to(self.device)  # one copy, not one per class
        per_class = self.synthetic.per_class_decoded
        subsample = None
        if per_class > hp.max_syn_per_class:
            subsample = torch.stack([torch.randperm(per_class, generator=self._generator)[: hp.max_syn_per_class] for _ in range(num_classes)]).to(self.device)
        weights, net = self._weights, self._net
        matched = [weights[n] for n in self._matched]
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=False)
        replaying = hp.image_step == "per_class" and not self._steps_per_class
        start = self._move_to_moments(optimizer.optimizer) if replaying else None
        total = torch.zeros((), device=self.device)

        def augmented(c: int) -> tuple[torch.Tensor, torch.Tensor]:
            """Class ``c``'s real batch and decoded synthetic images under the class's shared DSA draw."""
            syn = self._normalizer(self.synthetic.decoded_class_images(c))
            if subsample is not None:
                syn = syn[subsample[c]]
            both = self._dsa.apply(torch.cat([real[c], syn]), draws[c : c + 1])
            return both[: real.shape[1]], both[real.shape[1] :]

        def chunk_loss(chunk: list[int]) -> torch.Tensor:
            """The summed matching loss of ``chunk``'s classes (one grouped pass when chunks are on)."""
            if self._chunk > 1:
                assert self._grouped is not None
                pairs = [augmented(c) for c in chunk]
                labels = torch.tensor(chunk, device=self.device)
                return grouped_matching_loss(self._grouped, weights, self._matched, torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), labels, hp.metric)
            (c,) = chunk
            real_c, syn_c = augmented(c)
            if hp.match == "embed":
                return class_embedding_loss(lambda x: net.embed(weights, x), real_c, syn_c)
            return class_matching_loss(lambda x: net(weights, x), matched, real_c, syn_c, c, hp.metric)

        classes = list(self.rank_classes)
        for first in range(0, len(classes), self._chunk):
            chunk = classes[first : first + self._chunk]
            loss = chunk_loss(chunk)
            self.manual_backward(loss, inputs=[self.synthetic.images])
            total = total + loss.detach()
            if self._steps_per_class:
                self._step_images(optimizer, counted=chunk[-1] == classes[-1])
                optimizer.zero_grad(set_to_none=False)
        if self._steps_per_class:
            return total
        if self.trainer.world_size > 1:
            total = self._sync_gradients(total)
        if replaying:
            self._replay(optimizer, start)
        else:
            self._step_images(optimizer, counted=True)
        return total

    def _move_to_moments(self, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor | None, SGDRule]:
        """Put every class's images where the per-class loop takes its gradient; returns the start state.

        The gradients then accumulate into ``images.grad`` as with one step per iteration, each
        class's at its own moment (:func:`~lightning_dd.distill.replay.moments`).
        """
        assert self.synthetic is not None
        images = self.synthetic.images
        rule = SGDRule.of(optimizer)
        x, buf = images.detach().clone(), optimizer.state[images].get("momentum_buffer")
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            images.copy_(moments(x, buf, self.synthetic.num_classes, rule, self.hparams.clamp == "per_step"))
        return x, buf, rule

    def _replay(self, optimizer, start: tuple[torch.Tensor, torch.Tensor | None, SGDRule]) -> None:
        """Write the per-class loop's result (images and momentum buffer) from the gradients taken at the moments.

        Lightning counts one global step per optimiser step, so the step is still called once,
        without a gradient: SGD skips a parameter whose ``grad`` is None.
        """
        assert self.synthetic is not None
        images, (x, buf, rule) = self.synthetic.images, start
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            x, buf = replay(x, buf, images.grad, self.synthetic.num_classes, rule, self.hparams.clamp == "per_step")
            images.copy_(x)
        if buf is not None:
            optimizer.optimizer.state[images]["momentum_buffer"] = buf
        images.grad = None
        optimizer.step()

    def _step_images(self, optimizer, counted: bool) -> None:
        """One synthetic-image SGD step; ``counted`` steps go through Lightning (one global step per inner iteration)."""
        if counted:
            optimizer.step()
        else:
            optimizer.optimizer.step()
        if self.hparams.clamp == "per_step":
            self.synthetic.clamp_()

    def _sync_gradients(self, total: torch.Tensor) -> torch.Tensor:
        """Sum the synthetic-image gradients (each rank holds its own classes') across ranks."""
        assert self.synthetic is not None
        import torch.distributed as dist

        grad = self.synthetic.images.grad
        packed = torch.cat([grad.flatten(), total.view(1)])
        dist.all_reduce(packed)
        grad.copy_(packed[:-1].view_as(grad))
        return packed[-1]

    def _network_step(self) -> None:
        """Train the current network on ``n_data`` real images (DSA + CutMix), IDC-style."""
        hp = self.hparams
        if hp.n_data == 0:
            return
        assert self._real is not None and self._net is not None and self._weights is not None and self._net_optimizer is not None
        weights, net, optimizer, size = self._weights, self._net, self._net_optimizer, self.net_batch
        x, y = self._real.random_batch(self.update_images, self._generator)
        for start in range(0, x.shape[0], size):
            xb, yb = x[start : start + size], y[start : start + size]
            loss = augmented_loss(lambda z: net(weights, z), xb, yb, self._net_dsa, self._generator, hp.net_cutmix_p)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def _end_outer(self) -> None:
        assert self._loss_sum is not None and self.synthetic is not None
        mean_loss = self._loss_sum / self.hparams.inner_loop
        if not bool(torch.isfinite(mean_loss)):  # one host sync per outer iteration
            with torch.no_grad():
                self.synthetic.images.copy_(self._good_images)
            raise DivergenceError(f"the matching loss became {float(mean_loss)} in outer iteration {self.outer + 1}; the synthetic set was reset to its state before that iteration (lower lr_img or change metric)")
        self.log("distill/outer_loss", mean_loss, on_step=True, rank_zero_only=True)
        self.log("distill/seconds_per_outer", time.perf_counter() - self._outer_started, on_step=True, rank_zero_only=True)
        self.outer += 1
        self.inner = 0
        self._weights, self._net_optimizer = None, None
        self.finished_outer = True
        if self.outer >= self.hparams.outer_iterations:
            self.trainer.should_stop = True

    # -------------------------------------------------------------- results
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

    # ----------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lightning_dd"] = {
            "outer": self.outer,
            "inner": self.inner,
            "member": self.member,
            "generator": self._generator.get_state(),
            "weights": None if self._weights is None else {n: w.detach().cpu() for n, w in self._weights.items()},
            "net_optimizer": None if self._net_optimizer is None else self._net_optimizer.state_dict(),
            "loss_sum": None if self._loss_sum is None else self._loss_sum.detach().cpu(),
            "good_images": None if self._good_images is None else self._good_images.cpu(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("lightning_dd")
        if state is None:
            raise ConfigError("this checkpoint was not written by lightning-dd's DistillModule")
        check_resume(dict(self.hparams), checkpoint)  # the CLI merged the checkpoint's settings already; the Python API has not
        self._ensure_synthetic(checkpoint["state_dict"])
        self.outer, self.inner, self.member = state["outer"], state["inner"], state["member"]
        if self._generator is None:
            self._generator = torch.Generator()
        self._generator.set_state(state["generator"])
        self._restored = (state["weights"], state["net_optimizer"]) if state["weights"] is not None else None
        self._loss_sum = state["loss_sum"]
        self._good_images = state["good_images"]
        self._outer_started = time.perf_counter()

    def _ensure_synthetic(self, state_dict: dict[str, Any]) -> None:
        """Create the synthetic set from a state dict's shapes when no data was attached."""
        images = state_dict.get("synthetic.images")
        if self.synthetic is None and images is not None:
            classes = int(state_dict["synthetic.labels"].max()) + 1
            self.synthetic = SyntheticSet(classes, self.hparams.ipc, images.shape[1], tuple(images.shape[2:]), self.hparams.factor)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # load_from_checkpoint and DDP-spawn result recovery load weights into a module that never saw data.
        self._ensure_synthetic(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
