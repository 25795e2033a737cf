from pathlib import Path

import pytest
import torch

from lightning_dd.distill.pool import EarlyStagePool, PoolConfig, filter_normalized_direction, perturb
from lightning_dd.utils.errors import ConfigError, FileFormatError
from lightning_dd.nets import ConvNet, NetSpec


def test_filter_normalised_direction_norms():
    w = torch.randn(6, 3, 3, 3) * torch.arange(1.0, 7.0).view(6, 1, 1, 1)
    d = filter_normalized_direction(w, torch.Generator().manual_seed(0))
    assert torch.allclose(d.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1), rtol=1e-5)


def test_perturbation_moves_only_multi_dimensional_tensors_within_range():
    from helpers import reference_perturb  # written from the paper, not from pool.py

    net = ConvNet(1, 10, (8, 8), depth=2, width=8)
    params = {n: p.detach() for n, p in net.named_parameters()}
    for seed in range(10):
        out = perturb(params, 0.01, 0.09, torch.Generator().manual_seed(seed))
        expected = reference_perturb(params, 0.01, 0.09, torch.Generator().manual_seed(seed))
        for name, w in params.items():
            if w.ndim <= 1:
                assert torch.equal(out[name], w), name
            torch.testing.assert_close(out[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ConfigError):
        perturb(params, 0.1, 0.01, torch.Generator())


def test_pool_draw_index_is_always_in_range():
    pool = EarlyStagePool([{}] * 3, "k", {})
    g = torch.Generator().manual_seed(0)
    seen = {pool.draw(g) for _ in range(2000)}
    assert seen == {0, 1, 2}


def test_pool_cache_is_reused_and_keyed(digits, pool_dir, monkeypatch):
    net, config = NetSpec(width=8, depth=2), PoolConfig(size=2, epochs=1, cache_dir=pool_dir, batch_size=256)
    first = EarlyStagePool.build_or_load(net, config, digits.train_data, seed=0, progress=False)
    assert len(first) == 2 and first.members[0].keys() == net.build(1, 10, (8, 8)).state_dict().keys()
    assert not torch.equal(first.members[0]["features.0.weight"], first.members[1]["features.0.weight"])
    files = list(Path(pool_dir).glob("pool-*.pt"))
    assert len(files) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached pool should have been loaded")

    monkeypatch.setattr(EarlyStagePool, "pretrain", classmethod(no_training))
    second = EarlyStagePool.build_or_load(net, config, digits.train_data, seed=0, progress=False)
    assert second.key == first.key
    assert all(torch.equal(a, b) for a, b in zip(first.members[1].values(), second.members[1].values()))
    # Any change to what defines the pool gives another key (and would pretrain).
    with pytest.raises(AssertionError, match="cached pool"):
        EarlyStagePool.build_or_load(NetSpec(width=16, depth=2), config, digits.train_data, seed=0, progress=False)
    with pytest.raises(AssertionError, match="cached pool"):
        EarlyStagePool.build_or_load(
            net, PoolConfig(size=2, epochs=2, cache_dir=pool_dir), digits.train_data, seed=0, progress=False
        )


def test_foreign_or_mismatched_cache_is_refused(tmp_path, digits):
    bad = tmp_path / "pool-x.pt"
    bad.write_bytes(b"not a pool")
    with pytest.raises(FileFormatError, match="not a readable lightning-dd pool file"):
        EarlyStagePool.load(bad)
    torch.save(
        {"format": "lightning-dd/pool", "version": 1, "key": "k", "fields": {"net": "other"}, "members": []}, bad
    )
    with pytest.raises(FileFormatError, match="built for other settings"):
        EarlyStagePool.load(bad, expected_fields={"net": "mine"})
