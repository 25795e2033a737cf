"""The network matched on: its template run with outside weights, its grouped form, the matched tensors.

Built once when data is attached (the shapes depend on the dataset); every outer iteration then
draws weights for it. Only the template's structure is used, never its own weights.

Any network works here, built in or given by import path: the head is found generically
(:func:`~lightning_dd.nets.head_parameter_names`), buffers such as batch norm's running
statistics travel with the drawn weights and move as the template runs in training mode (as
IDC matches batch-norm networks), and only the built-in ConvNet also gets a grouped form.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightning_dd.data.sources import DatasetInfo
from lightning_dd.distill.functional_net import FunctionalNet
from lightning_dd.distill.grouped import GroupedConvNet, supports_grouped
from lightning_dd.distill.matching import matched_parameter_names
from lightning_dd.utils.errors import ConfigError
from lightning_dd.nets.spec import NetSpec, head_parameter_names


@dataclass
class MatchNetwork:
    """A network description with the forms distillation runs it in.

    Attributes:
        spec: the description (fresh networks are built from it in IDC mode).
        functional: the template run with given weights.
        grouped: the template as grouped convolutions (several classes per pass), or ``None``
            where it cannot run so (:func:`~lightning_dd.distill.grouped.supports_grouped`).
        matched: names of the parameters whose gradients are matched.
    """

    spec: NetSpec
    functional: FunctionalNet
    grouped: GroupedConvNet | None
    matched: list[str]

    @classmethod
    def build(cls, spec: NetSpec, info: DatasetInfo, seed: int, match_bias: bool, match_head: bool) -> "MatchNetwork":
        """The template for ``info``'s images and classes; refuses a choice that matches no parameter."""
        template = spec.build_seeded(seed, info.channels, info.num_classes, info.image_size)
        shapes = {n: p.shape for n, p in template.named_parameters()}
        matched = matched_parameter_names(shapes, head_parameter_names(template), match_bias, match_head)
        if not matched:
            raise ConfigError("no parameters are matched; enable match_bias or match_head for this network")
        return cls(
            spec, FunctionalNet(template), GroupedConvNet(template) if supports_grouped(template) else None, matched
        )
