"""One outer iteration's work of gradient matching (IDC) on augmented models (Acc-DD), without Lightning.

An outer iteration begins by drawing a network (:meth:`Distiller.begin_outer`: a perturbed
early-stage pool member in Acc-DD mode, a fresh random network in IDC mode) and runs
``inner_loop`` inner iterations, each a matching step (:meth:`Distiller.matching_step`: a
class-balanced real batch, one DSA draw per class shared by the class's real and synthetic images,
the per-class or grouped loss, then the image step of the chosen
:class:`~lightning_dd.distill.image_step.ImageStep`) and a network update on real images
(:meth:`Distiller.network_step`). :meth:`Distiller.end_inner` counts them; at the end of an outer
iteration a non-finite mean loss rolls the images back to where the iteration began.

Every random choice comes from one generator (``state.generator``), in a fixed order, so a run is
reproducible and resumes bit for bit. Processes: each process matches its own classes and the
module hands in an ``all_reduce`` that sums a tensor across processes, so nothing here knows how
processes are launched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch

from lightning_dd.augment import DSA, augmented_loss
from lightning_dd.data.real import Normalizer, RealData
from lightning_dd.data.sources import DatasetInfo
from lightning_dd.distill.grouped import grouped_matching_loss
from lightning_dd.distill.image_step import ImageOptimizer, ImageStep
from lightning_dd.distill.matching import class_embedding_loss, class_matching_loss
from lightning_dd.distill.network import MatchNetwork
from lightning_dd.distill.pool import EarlyStagePool, perturb
from lightning_dd.distill.settings import DistillSettings
from lightning_dd.distill.state import DistillState
from lightning_dd.distill.synthetic import SyntheticSet
from lightning_dd.utils.errors import DivergenceError

Tensor = torch.Tensor
Backward = Callable[..., None]  # backward(loss, inputs=[images]): Lightning's manual_backward, or Tensor.backward


@dataclass(frozen=True)
class Placement:
    """Where the work runs.

    Attributes:
        device: the device of the images, the real data and the network.
        classes: the classes this process matches (all of them with one process).
        classes_per_pass: classes matched together in one grouped pass (1: one at a time).
        all_reduce: sums a tensor in place across processes; ``None`` with one process.
    """

    device: torch.device
    classes: Sequence[int]
    classes_per_pass: int = 1
    all_reduce: Callable[[Tensor], None] | None = None


class MatchingBatch(NamedTuple):
    """One inner iteration's draws: real images ``[C, n, ...]``, DSA draws ``[C, ...]``, decoded-image subsets or ``None``."""

    real: Tensor
    draws: Tensor
    subsample: Tensor | None


class Distiller:
    """Runs outer iterations on ``state`` with the given parts; see the module docstring for the order of work.

    Args:
        settings: what each part reads (:class:`~lightning_dd.distill.settings.DistillSettings`).
        state: position, random stream and the current network; a restored network is placed here.
        synthetic: the learnable images.
        real: the real training data (moved to ``placement.device``).
        info: the dataset's facts (classes, normalisation, whether flips are allowed).
        network: the network matched on.
        pool: the early-stage pool (``settings.draw.source == "pool"``), else ``None``.
        image_step: how the images are stepped from the matching gradients.
        placement: device, this process's classes, classes per pass, the cross-process sum.
    """

    def __init__(
        self,
        settings: DistillSettings,
        state: DistillState,
        synthetic: SyntheticSet,
        real: RealData,
        info: DatasetInfo,
        network: MatchNetwork,
        pool: EarlyStagePool | None,
        image_step: ImageStep,
        placement: Placement,
    ) -> None:
        if settings.draw.source == "pool" and pool is None:
            raise ValueError("model_source='pool' needs the early-stage pool")
        if state.generator is None:
            raise ValueError("the state has no generator: attach data or restore a checkpoint first")
        self.settings, self.state, self.synthetic, self.info = settings, state, synthetic, info
        self.network, self.pool, self.image_step, self.placement = network, pool, image_step, placement
        self.device = placement.device
        self.real = real.to(self.device)
        network.functional.to(self.device)
        self.normalizer = Normalizer(info.mean, info.std, self.device)
        self.dsa = DSA(settings.matching.augment, flip_ok=info.flip_ok)
        self.net_dsa = settings.update.schedule.augmentation(info.flip_ok)
        self._place_restored()

    def _place_restored(self) -> None:
        """Put a checkpoint's network (resumed in the middle of an outer iteration) and rollback images on the device."""
        state = self.state
        if state.restored is not None:
            weights, optimizer_state = state.restored
            state.weights = self.network.functional.clone_weights(weights, self.device)
            state.net_optimizer = self._net_optimizer(optimizer_state)
            state.restored = None
        if state.good_images is not None:
            state.good_images = state.good_images.to(self.device)

    def _autocast(self) -> torch.autocast:
        """bf16 autocast on the device when the settings ask for it, else a disabled (no-op) one."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.settings.bf16)

    # ------------------------------------------------------------------ outer iterations
    def begin_outer(self) -> None:
        """Clamp the images, keep them as the rollback target, draw this iteration's network and its optimiser."""
        state = self.state
        self.synthetic.clamp_()
        state.good_images = self.synthetic.images.detach().clone()
        state.member, weights = self._draw_network()
        state.weights = self.network.functional.clone_weights(weights, self.device)
        state.net_optimizer = self._net_optimizer()
        state.loss_sum = None

    def _draw_network(self) -> tuple[int, dict[str, Tensor]]:
        """``(pool member or -1, weights)``: a uniformly drawn pool member or a freshly seeded network, perturbed if asked."""
        draw, generator, info = self.settings.draw, self.state.generator, self.info
        if draw.source == "pool":
            assert self.pool is not None
            member = self.pool.draw(generator)
            weights = self.pool.members[member]
        else:
            member = -1
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator).item())
            weights = self.network.spec.build_seeded(
                seed, info.channels, info.num_classes, info.image_size
            ).state_dict()
        rho = draw.perturbation
        if rho.enabled:
            params, buffers = self.network.functional.split(weights)
            weights = {**perturb(params, rho.rho_min, rho.rho_max, generator), **buffers}
        return member, weights

    def _net_optimizer(self, state: dict | None = None) -> torch.optim.SGD:
        """The network's SGD for this outer iteration (momentum carries over between its inner iterations)."""
        s = self.settings.update.schedule
        optimizer = torch.optim.SGD(
            self.network.functional.parameters_of(self.state.weights),
            lr=s.lr,
            momentum=s.momentum,
            weight_decay=s.weight_decay,
        )
        if state is not None:
            optimizer.load_state_dict(state)
        return optimizer

    def end_inner(self, loss: Tensor) -> Tensor | None:
        """Count an inner iteration with its matching loss; returns the outer iteration's mean loss when this ended it."""
        state = self.state
        state.loss_sum = loss if state.loss_sum is None else state.loss_sum + loss
        state.inner += 1
        return self._end_outer() if state.inner == self.settings.inner_loop else None

    def _end_outer(self) -> Tensor:
        """The mean matching loss of the outer iteration; a non-finite one restores the images and raises.

        Raises:
            DivergenceError: the loss became inf or nan; the images are back where the iteration began.
        """
        state = self.state
        assert state.loss_sum is not None and state.good_images is not None
        mean_loss = state.loss_sum / self.settings.inner_loop
        if not bool(torch.isfinite(mean_loss)):  # one host sync per outer iteration
            with torch.no_grad():
                self.synthetic.images.copy_(state.good_images)
            raise DivergenceError(
                f"the matching loss became {float(mean_loss)} in outer iteration {state.outer + 1}; the synthetic set was reset to its state before that iteration (lower lr_img or change metric)"
            )
        state.outer += 1
        state.inner = 0
        state.weights, state.net_optimizer = None, None
        return mean_loss

    # ------------------------------------------------------------------ matching
    def matching_step(self, optimizer: ImageOptimizer, backward: Backward) -> Tensor:
        """Match every class of this process and step the images; returns the summed matching loss (all processes')."""
        with self._autocast():
            batch = self._draw_batch()
            optimizer.zero_grad(set_to_none=False)
            started = self.image_step.begin(self.synthetic, optimizer)
            total = torch.zeros((), device=self.device)
            classes, size = list(self.placement.classes), self.placement.classes_per_pass
            for first in range(0, len(classes), size):
                chunk = classes[first : first + size]
                loss = self._chunk_loss(chunk, batch)
                backward(loss, inputs=[self.synthetic.images])
                total = total + loss.detach()
                self.image_step.after_pass(self.synthetic, optimizer, last=chunk[-1] == classes[-1])
            if self.placement.all_reduce is not None:
                total = self._sum_across_processes(total)
            self.image_step.finish(self.synthetic, optimizer, started)
        return total

    def _draw_batch(self) -> MatchingBatch:
        """The class-balanced real batch, one DSA draw per class and, over the cap, each class's decoded-image subset."""
        m, generator, classes = self.settings.matching, self.state.generator, self.info.num_classes
        real = self.real.class_balanced_batch(m.batch_real, generator)
        draws = self.dsa.sample(classes, generator).to(self.device)  # one copy, not one per class
        per_class, subsample = self.synthetic.per_class_decoded, None
        if per_class > m.max_syn_per_class:
            subsample = torch.stack(
                [torch.randperm(per_class, generator=generator)[: m.max_syn_per_class] for _ in range(classes)]
            ).to(self.device)
        return MatchingBatch(real, draws, subsample)

    def _class_pair(self, c: int, batch: MatchingBatch) -> tuple[Tensor, Tensor]:
        """Class ``c``'s real batch and decoded synthetic images under the class's shared DSA draw."""
        syn = self.normalizer(self.synthetic.decoded_class_images(c))
        if batch.subsample is not None:
            syn = syn[batch.subsample[c]]
        n_real = batch.real.shape[1]
        both = self.dsa.apply(torch.cat([batch.real[c], syn]), batch.draws[c : c + 1])
        return both[:n_real], both[n_real:]

    def _chunk_loss(self, chunk: list[int], batch: MatchingBatch) -> Tensor:
        """The summed matching loss of ``chunk``'s classes (one grouped pass when it holds several)."""
        m, weights, net = self.settings.matching, self.state.weights, self.network
        if self.placement.classes_per_pass > 1:
            assert net.grouped is not None
            pairs = [self._class_pair(c, batch) for c in chunk]
            labels = torch.tensor(chunk, device=self.device)
            return grouped_matching_loss(
                net.grouped,
                weights,
                net.matched,
                torch.stack([p[0] for p in pairs]),
                torch.stack([p[1] for p in pairs]),
                labels,
                m.metric,
            )
        (c,) = chunk
        real_c, syn_c = self._class_pair(c, batch)
        if m.match == "embed":
            return class_embedding_loss(lambda x: net.functional.embed(weights, x), real_c, syn_c)
        return class_matching_loss(
            lambda x: net.functional(weights, x), [weights[n] for n in net.matched], real_c, syn_c, c, m.metric
        )

    def _sum_across_processes(self, total: Tensor) -> Tensor:
        """Sum the image gradients (each process holds its own classes') and the loss across processes, in one call."""
        grad = self.synthetic.images.grad
        packed = torch.cat([grad.flatten(), total.view(1)])
        self.placement.all_reduce(packed)
        grad.copy_(packed[:-1].view_as(grad))
        return packed[-1]

    # ------------------------------------------------------------------ network update
    def network_step(self) -> None:
        """Train the current network on the update's real images (DSA + CutMix) in minibatches, IDC-style."""
        u, state = self.settings.update, self.state
        if u.images == 0:
            return
        weights, net, optimizer = state.weights, self.network.functional, state.net_optimizer
        with self._autocast():
            x, y = self.real.random_batch(u.images, state.generator)
            for start in range(0, x.shape[0], u.batch):
                xb, yb = x[start : start + u.batch], y[start : start + u.batch]
                loss = augmented_loss(
                    lambda z: net(weights, z), xb, yb, self.net_dsa, state.generator, u.schedule.cutmix_p
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
