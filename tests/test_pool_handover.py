"""A pool set on the module before fit is used as is (benchmarks hand the same pool to two codebases)."""

from lightning_dd.distill.pool import EarlyStagePool

from helpers import fit, tiny_module


def test_a_pool_handed_in_before_fit_is_used_and_nothing_is_pretrained(tmp_path, monkeypatch):
    module = tiny_module(str(tmp_path / "never-written"), outer_iterations=2, inner_loop=1)
    template = module.net_spec.build_seeded(123, 1, 10, (8, 8))
    handed = EarlyStagePool([{k: v.clone() for k, v in template.state_dict().items()}], key="handed", fields={})
    module.pool = handed
    monkeypatch.setattr(
        EarlyStagePool, "pretrain", classmethod(lambda *a, **k: (_ for _ in ()).throw(AssertionError("pretrained")))
    )
    fit(module)
    assert module.pool is handed and module.member == 0  # the only member was drawn
    assert not (tmp_path / "never-written").exists()
