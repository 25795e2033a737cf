"""The synthetic-image step of an inner iteration: three strategies, one chosen once from the settings.

``image_step`` and ``per_class_impl`` are read here and nowhere else (:func:`image_step_for`), and
``classes_per_pass`` is checked and resolved by the chosen strategy, because each strategy has its
own limits: whether several processes can share its classes, whether several classes may be
matched in one pass, which optimiser it can step.

- :class:`PerIteration` sums every class's gradient and steps once per inner iteration.
- :class:`PerClassLoop` is the authors' loop: back-propagate one class, step, next class; one
  class per pass and one process, since no process can step after a class another one holds.
- :class:`PerClassReplay` gives the loop's result from gradients taken all at once, at the state
  the loop would give each class (:mod:`lightning_dd.distill.replay`), so grouped passes and
  several processes work; it replays torch.optim.SGD's rule, so it needs that optimiser.

The :class:`~lightning_dd.distill.distiller.Distiller` calls :meth:`ImageStep.begin` before the
first class's gradient, :meth:`ImageStep.after_pass` after each pass's backward and
:meth:`ImageStep.finish` once every gradient is in (summed across processes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

import torch

from lightning_dd.distill.grouped import check_grouped_pass, default_classes_per_pass
from lightning_dd.distill.replay import SGDRule, moments, replay
from lightning_dd.distill.synthetic import SyntheticSet
from lightning_dd.utils.errors import ConfigError, choose
from lightning_dd.nets.spec import NetSpec

IMAGE_STEPS = ("per_class", "per_iteration")
PER_CLASS_IMPLS = ("replay", "loop")


class ImageOptimizer(Protocol):
    """The image optimiser as the strategies use it: Lightning's ``LightningOptimizer`` or a stand-in.

    ``step()`` is the counted step (Lightning counts one global step per call); ``optimizer`` is
    the wrapped torch optimiser, stepped directly where a step must not be counted.
    """

    optimizer: torch.optim.Optimizer

    def step(self, closure: Any = None) -> Any: ...

    def zero_grad(self, set_to_none: bool = True) -> None: ...


class ImageStep(ABC):
    """How the synthetic images are stepped from the matching gradients, with the limits of that way.

    The class attributes state the limits; the ``check_*`` methods refuse settings beyond them
    in one sentence. Subclasses say how the step runs (:meth:`begin`, :meth:`after_pass`,
    :meth:`finish`).

    Args:
        clamp_each_step: clamp the pixels to [0, 1] after every image step (``clamp="per_step"``).
    """

    name: ClassVar[str]
    several_processes: ClassVar[bool] = True  # processes may each hold other classes
    several_classes_per_pass: ClassVar[bool] = True  # classes may be matched together (grouped pass)
    optimizer_type: ClassVar[type[torch.optim.Optimizer]] = torch.optim.Optimizer

    def __init__(self, clamp_each_step: bool) -> None:
        self.clamp_each_step = clamp_each_step

    def check_classes_per_pass(self, classes_per_pass: int | None) -> None:
        """Refuse, at construction, a number of classes per pass this step cannot use (none here)."""

    def check_processes(self, world_size: int) -> None:
        """Refuse several processes where this step cannot share its classes among them (none here)."""

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Refuse an image optimiser this step cannot drive (any torch optimiser works here)."""
        if not isinstance(optimizer, self.optimizer_type):
            raise ConfigError(
                f"image_step={self.name} needs a {self.optimizer_type.__name__} image optimiser, got {type(optimizer).__name__}"
            )

    def check_grouped(self, configured: int | None, grouped: bool, match: str, net: NetSpec) -> None:
        """Refuse several classes per pass where the grouped pass cannot run (the start-up checks ask it).

        Args:
            configured: ``classes_per_pass`` as set (``None``: the device's default).
            grouped: whether the network can run as a grouped pass (:func:`~lightning_dd.distill.grouped.supports_grouped`).
            match: ``grad`` or ``embed`` (only gradient matching runs grouped).
            net: the network's description, named in the refusal.
        """
        check_grouped_pass(configured, grouped, match, net.name, net.norm)

    def classes_per_pass(
        self, configured: int | None, grouped: bool, match: str, net: NetSpec, device_type: str
    ) -> int:
        """Classes matched per pass: ``configured`` (checked as :meth:`check_grouped`), or the default of ``device_type``."""
        if configured is None:
            return default_classes_per_pass(device_type) if grouped and match == "grad" else 1
        self.check_grouped(configured, grouped, match, net)
        return configured

    def begin(self, synthetic: SyntheticSet, optimizer: ImageOptimizer) -> Any:
        """Before the first class's gradient is taken; returns what :meth:`finish` needs (nothing here)."""
        return None

    def after_pass(self, synthetic: SyntheticSet, optimizer: ImageOptimizer, last: bool) -> None:
        """After one pass's gradient was accumulated into the images' ``grad`` (nothing here)."""

    @abstractmethod
    def finish(self, synthetic: SyntheticSet, optimizer: ImageOptimizer, started: Any) -> None:
        """Once every class's gradient is in ``images.grad`` (summed across processes); ``started`` is :meth:`begin`'s."""

    def _step(self, synthetic: SyntheticSet, optimizer: ImageOptimizer, counted: bool) -> None:
        """One image step; only ``counted`` steps go through Lightning (one global step per inner iteration)."""
        if counted:
            optimizer.step()
        else:
            optimizer.optimizer.step()
        if self.clamp_each_step:
            synthetic.clamp_()


class PerIteration(ImageStep):
    """Every class's gradient summed, one image step per inner iteration (``image_step="per_iteration"``)."""

    name = "per_iteration"

    def finish(self, synthetic: SyntheticSet, optimizer: ImageOptimizer, started: Any) -> None:
        """One counted step on the summed gradient."""
        self._step(synthetic, optimizer, counted=True)


class PerClassLoop(ImageStep):
    """The authors' loop (``image_step="per_class"``, ``per_class_impl="loop"``): step after every class.

    With momentum, a class's step also moves the other classes' images along their momentum.
    """

    name = "per_class (per_class_impl=loop)"
    several_processes = False
    several_classes_per_pass = False

    def check_classes_per_pass(self, classes_per_pass: int | None) -> None:
        if classes_per_pass is not None and classes_per_pass > 1:
            raise ConfigError(
                f"per_class_impl='loop' steps the images after every class, so classes_per_pass must be 1 (got {classes_per_pass}); use per_class_impl='replay' to match several classes per pass"
            )

    def check_processes(self, world_size: int) -> None:
        if world_size > 1:
            raise ConfigError(
                "model.per_class_impl=loop cannot run on several processes (each holds other classes, so none can step after every class); set model.per_class_impl=replay, which gives the same per-class steps"
            )

    def check_grouped(self, configured: int | None, grouped: bool, match: str, net: NetSpec) -> None:
        """Nothing runs grouped (a number above 1 was refused at construction)."""

    def classes_per_pass(
        self, configured: int | None, grouped: bool, match: str, net: NetSpec, device_type: str
    ) -> int:
        return 1

    def after_pass(self, synthetic: SyntheticSet, optimizer: ImageOptimizer, last: bool) -> None:
        """Step on this class's gradient (counted for the last class only), then clear it for the next."""
        self._step(synthetic, optimizer, counted=last)
        optimizer.zero_grad(set_to_none=False)

    def finish(self, synthetic: SyntheticSet, optimizer: ImageOptimizer, started: Any) -> None:
        """Every class has stepped already."""


class PerClassReplay(ImageStep):
    """The loop's per-class steps from gradients taken at once (``image_step="per_class"``, ``per_class_impl="replay"``)."""

    name = "per_class (per_class_impl=replay)"
    optimizer_type = torch.optim.SGD

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        if not isinstance(optimizer, torch.optim.SGD) or len(optimizer.param_groups) != 1:
            raise ConfigError(
                f"per_class_impl=replay replays torch.optim.SGD with one parameter group, got {type(optimizer).__name__} with {len(optimizer.param_groups)} group(s); use per_class_impl=loop"
            )

    def begin(
        self, synthetic: SyntheticSet, optimizer: ImageOptimizer
    ) -> tuple[torch.Tensor, torch.Tensor | None, SGDRule]:
        """Put every class's images where the loop takes its gradient; returns the start state.

        The gradients then accumulate into ``images.grad`` as with one step per iteration, each
        class's at its own moment (:func:`~lightning_dd.distill.replay.moments`).
        """
        images, raw = synthetic.images, optimizer.optimizer
        rule = SGDRule.of(raw)
        x, buf = images.detach().clone(), raw.state[images].get("momentum_buffer")
        with torch.no_grad(), torch.autocast(images.device.type, enabled=False):
            images.copy_(moments(x, buf, synthetic.num_classes, rule, self.clamp_each_step))
        return x, buf, rule

    def finish(
        self,
        synthetic: SyntheticSet,
        optimizer: ImageOptimizer,
        started: tuple[torch.Tensor, torch.Tensor | None, SGDRule],
    ) -> None:
        """Write the loop's result (images and momentum buffer) from the gradients taken at the moments.

        Lightning counts one global step per optimiser step, so the step is still called once,
        without a gradient: SGD skips a parameter whose ``grad`` is None.
        """
        images, (x, buf, rule) = synthetic.images, started
        with torch.no_grad(), torch.autocast(images.device.type, enabled=False):
            x, buf = replay(x, buf, images.grad, synthetic.num_classes, rule, self.clamp_each_step)
            images.copy_(x)
        if buf is not None:
            optimizer.optimizer.state[images]["momentum_buffer"] = buf
        images.grad = None
        optimizer.step()


def image_step_for(image_step: str, per_class_impl: str, clamp_each_step: bool) -> ImageStep:
    """The strategy for the settings: the one place ``image_step`` and ``per_class_impl`` are interpreted.

    ``per_class_impl`` only matters for ``image_step="per_class"``.
    """
    choose("image_step", image_step, IMAGE_STEPS)
    choose("per_class_impl", per_class_impl, PER_CLASS_IMPLS)
    if image_step == "per_iteration":
        return PerIteration(clamp_each_step)
    return PerClassLoop(clamp_each_step) if per_class_impl == "loop" else PerClassReplay(clamp_each_step)
