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


def test_an_evaluated_network_trains_at_least_one_epoch_by_one_rule(monkeypatch):
    """validation.TRAINED is the one "epochs >= 1" rule: the evaluation callback, the CLI's evaluation
    section, the evaluate command and the teacher all read it (the pool may pretrain 0 epochs)."""
    from lightning_dd.callbacks import SyntheticEvaluation
    from lightning_dd.commands import evaluate
    from lightning_dd.evaluation import check_evaluation_numbers
    from lightning_dd.teacher import TeacherConfig

    for name, prefixed in [("evaluation", "evaluation.epochs"), ("--", "--epochs"), ("teacher", "teacher.epochs")]:
        with pytest.raises(ConfigError, match=rf"^{prefixed} must be an integer >= 1, got 0"):
            if name == "teacher":
                TeacherConfig(epochs=0)
            else:
                check_evaluation_numbers({"epochs": 0}, name, {})
    with pytest.raises(ConfigError, match=r"^evaluation.epochs must be an integer >= 1, got 0"):
        SyntheticEvaluation(epochs=0).check_settings()
    with pytest.raises(ConfigError, match=r"^--epochs must be an integer >= 1, got 0"):
        evaluate("no-such-set.pt", epochs=0)
    PoolConfig(epochs=0)  # pretraining may train none

    monkeypatch.setitem(validation.TRAINED, "epochs", validation.Rule(low=5, integer=True))
    with pytest.raises(ConfigError, match=r"^evaluation.epochs must be .*>= 5.*got 3"):
        SyntheticEvaluation(epochs=3).check_settings()
    with pytest.raises(ConfigError, match=r"^--epochs must be .*>= 5.*got 3"):
        evaluate("no-such-set.pt", epochs=3)
    with pytest.raises(ConfigError, match=r"^teacher.epochs must be .*>= 5.*got 3"):
        TeacherConfig(epochs=3)


def test_the_temperature_rule_is_in_the_table(monkeypatch):
    from lightning_dd.callbacks import SyntheticEvaluation
    from lightning_dd.commands import evaluate

    with pytest.raises(ConfigError, match=r"^evaluation.temperature must be a finite number > 0, got 0"):
        SyntheticEvaluation(temperature=0.0).check_settings()
    monkeypatch.setitem(validation.RULES, "temperature", validation.Rule(low=10))
    with pytest.raises(ConfigError, match=r"^evaluation.temperature must be .*>= 10.*got 4"):
        SyntheticEvaluation(temperature=4.0).check_settings()
    with pytest.raises(ConfigError, match=r"^--temperature must be .*>= 10.*got 4"):
        evaluate("no-such-set.pt", temperature=4.0)


def test_the_pool_numbers_are_checked_by_one_function_under_each_spelling(monkeypatch):
    """PoolConfig.check_numbers: the config (``pool``/``model.pool``) and the pool command (``--``) spell the names."""
    from lightning_dd.commands import pool

    monkeypatch.setitem(validation.RULES, "size", validation.Rule(low=3, integer=True))
    with pytest.raises(ConfigError, match=r"^pool.size must be .*>= 3.*got 2"):
        PoolConfig(size=2)
    with pytest.raises(ConfigError, match=r"^model.pool.size must be .*>= 3.*got 2"):
        PoolConfig.check_numbers({"size": 2}, "model.pool")
    with pytest.raises(ConfigError, match=r"^--size must be .*>= 3.*got 2"):
        pool(size=2)


def test_the_perturbation_range_is_one_rule_under_each_spelling(monkeypatch):
    from lightning_dd.distill.checks import check_module_numbers

    with pytest.raises(ConfigError, match=r"^rho_min=0.5 is larger than rho_max=0.1; use rho_min <= rho_max"):
        perturb({"w": torch.ones(2, 2)}, 0.5, 0.1, torch.Generator())
    with pytest.raises(
        ConfigError, match=r"^model.rho_min=0.5 is larger than model.rho_max=0.1; use rho_min <= rho_max"
    ):
        check_module_numbers({"rho_min": 0.5, "rho_max": 0.1}, "model", {})
    with pytest.raises(ConfigError, match=r"^model.rho_min=0.5 is larger than model.rho_max=0.1"):
        DistillModule(rho_min=0.5, rho_max=0.1)
    with pytest.raises(ConfigError, match=r"^rho_min must be a finite number >= 0, got -0.1"):
        perturb({"w": torch.ones(2, 2)}, -0.1, 0.1, torch.Generator())
    perturb({"w": torch.ones(2, 2)}, 0.05, 0.05, torch.Generator())  # an empty-width range is a fixed magnitude


def test_the_perturbation_settings_are_one_self_checking_dataclass_under_their_flat_names():
    from lightning_dd.distill.settings import Perturbation

    with pytest.raises(ConfigError, match=r"^rho_min=0.5 is larger than rho_max=0.1; use rho_min <= rho_max"):
        Perturbation(True, 0.5, 0.1)
    with pytest.raises(ConfigError, match=r"^rho_max must be a finite number >= 0, got nan"):
        Perturbation(True, 0.01, math.nan)
    module = DistillModule(perturb=False, rho_min=0.02, rho_max=0.03)  # config keys model.perturb, model.rho_*
    assert module.settings.draw.perturbation == Perturbation(enabled=False, rho_min=0.02, rho_max=0.03)
    assert DistillModule().settings.draw.perturbation == Perturbation()
