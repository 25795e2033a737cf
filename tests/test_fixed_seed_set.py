"""Fixed-seed distillation in every image-step mode gives the synthetic set recorded in tests/data.

Why: a restructuring of the distillation code (issue #31: the Distiller and its image-step
strategies) must not change a single pixel. Each case fits a tiny DistillModule on the bundled
digits for two outer iterations of two inner iterations (network update on, pool or random
networks) and compares the final stored images (``torch.equal``) and the image optimiser's
momentum buffer (a SHA-256 of its bytes) with ``tests/data/fixed_seed_sets.pt``, bit for bit: the
same operations in the same order on one CPU thread give the same floats.

The reference file was produced by the code BEFORE the Distiller refactor (the 641-line
``DistillModule`` of lightning_dd/distill/module.py). Regenerate it only when a change of results
is intended, with::

    OMP_NUM_THREADS=1 LIGHTNING_DD_QUIET=1 .venv/bin/python tests/test_fixed_seed_set.py --regenerate
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from lightning_dd import PoolConfig

sys.path.insert(0, str(Path(__file__).parent))
from helpers import fit, tiny_distill  # noqa: E402

REFERENCE = Path(__file__).parent / "data" / "fixed_seed_sets.pt"
# Shared by every case: two outer iterations of two inner ones, the network trained between
# matching steps (n_data > 0), a real early-stage pool where the case draws from one.
COMMON = dict(outer_iterations=2, inner_loop=2, batch_real=8, n_data=24, net_batch_size=16, lr_img=0.5, seed=3)
CASES = {
    "per_iteration_pool": dict(
        image_step="per_iteration", model_source="pool", factor=2, init="mix", max_syn_per_class=3
    ),
    "per_class_loop_pool": dict(
        image_step="per_class", per_class_impl="loop", model_source="pool", clamp="per_step", momentum_img=0.9
    ),
    "per_class_replay_random": dict(
        image_step="per_class", per_class_impl="replay", model_source="random", ipc=2, momentum_img=0.9, metric="cos"
    ),
    "per_class_replay_grouped_pool": dict(
        image_step="per_class",
        per_class_impl="replay",
        model_source="pool",
        classes_per_pass=4,
        factor=2,
        init="mix",
        clamp="per_step",
    ),
    "per_class_loop_random_embed": dict(
        image_step="per_class",
        per_class_impl="loop",
        model_source="random",
        perturb=False,
        match="embed",
        net_whole_batches=False,
    ),
    "per_iteration_random_grouped": dict(
        image_step="per_iteration", model_source="random", classes_per_pass=3, metric="l1"
    ),
}


def digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes: a bit-exact comparison that keeps the reference file small."""
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def distilled(case: str, pool_dir: str) -> dict:
    """The stored images and the digest of the image optimiser's momentum buffer after the case's fit."""
    pool = PoolConfig(size=2, epochs=1, batch_size=256, cache_dir=pool_dir)
    module = tiny_distill(pool_dir, pool=pool, **{**COMMON, **CASES[case]})
    trainer = fit(module)
    images = module.synthetic.images
    buffer = trainer.optimizers[0].state[images]["momentum_buffer"]
    return {"images": images.detach().cpu().clone(), "momentum": digest(buffer)}


@pytest.mark.parametrize("case", list(CASES))
def test_fixed_seed_fit_gives_the_recorded_set(case, pool_dir):
    expected = torch.load(REFERENCE, weights_only=True)[case]
    got = distilled(case, pool_dir)
    assert torch.equal(got["images"], expected["images"]), (
        f"{case}: images differ by up to {float((got['images'] - expected['images']).abs().max())}"
    )
    assert got["momentum"] == expected["momentum"], f"{case}: momentum buffers differ"


if __name__ == "__main__" and "--regenerate" in sys.argv:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        sets = {case: distilled(case, str(Path(tmp) / "pools")) for case in CASES}
    REFERENCE.parent.mkdir(exist_ok=True)
    torch.save(sets, REFERENCE)
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes)")
