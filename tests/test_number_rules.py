"""Number ranges live in one table (lightning_dd.utils.validation.RULES): the module, the pool and perturbation read it."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_dd import DistillModule
from lightning_dd.utils import validation
from lightning_dd.distill.pool import PoolConfig, perturb
from lightning_dd.utils.errors import ConfigError


def test_the_module_the_pool_and_perturbation_follow_the_rule_table(monkeypatch):
    monkeypatch.setitem(validation.RULES, "ipc", validation.Rule(low=5, integer=True))
    monkeypatch.setitem(validation.RULES, "size", validation.Rule(low=3, integer=True))
    monkeypatch.setitem(validation.RULES, "rho_max", validation.Rule(low=0, high=0.05))
    with pytest.raises(ConfigError, match=r"^ipc must be .*>= 5.*got 3"):
        DistillModule(ipc=3)
    with pytest.raises(ConfigError, match=r"pool.size must be .*>= 3.*got 2"):
        PoolConfig(size=2)
    with pytest.raises(ConfigError, match=r"rho_max must be .*got 0.09"):
        perturb({"w": torch.ones(2, 2)}, 0.01, 0.09, torch.Generator())


def test_out_of_range_and_not_finite_numbers_are_refused_by_name():
    with pytest.raises(ConfigError, match="lr_img must be"):
        DistillModule(lr_img=0.0)
    with pytest.raises(ConfigError, match="n_data must be"):
        DistillModule(n_data=-1)
    with pytest.raises(ConfigError, match="net_momentum must be"):
        DistillModule(net_momentum=math.nan)
    with pytest.raises(ConfigError, match="rho_min=0.5 is larger than model.rho_max=0.1"):
        DistillModule(rho_min=0.5, rho_max=0.1)
    with pytest.raises(ConfigError, match="pool.lr must be"):
        PoolConfig(lr=-1.0)
    DistillModule(ipc=1, classes_per_pass=None)  # defaults and None where allowed pass
