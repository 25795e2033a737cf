"""lightning_dd.distill.resume: which settings a resumed run may change, on hand-made checkpoints."""

import pytest

from lightning_dd.distill.resume import check_resume, flatten
from lightning_dd.utils.errors import ConfigError


def checkpoint(**hparams):
    return {"hyper_parameters": {"_class_path": "x", **hparams}, "lightning_dd": {}}


def test_nested_settings_flatten_to_dotted_keys_and_tuples_compare_as_lists():
    assert flatten({"pool": {"cache_dir": "a", "size": 2}, "lr_img": 0.1, "m": (1, 2)}) == {
        "pool.cache_dir": "a",
        "pool.size": 2,
        "lr_img": 0.1,
        "m": [1, 2],
    }


def test_a_changed_setting_is_refused_naming_both_values():
    with pytest.raises(ConfigError, match=r"model\.pool\.size=3 differs from 2 in run\.ckpt"):
        check_resume(
            {"pool": {"size": 3, "cache_dir": "a"}}, checkpoint(pool={"size": 2, "cache_dir": "a"}), "run.ckpt"
        )


def test_safe_settings_and_settings_the_checkpoint_lacks_pass():
    changes = check_resume({"outer_iterations": 9, "pool": {"cache_dir": "b"}, "per_class_impl": "replay", "brand_new": 1},
                           checkpoint(outer_iterations=3, pool={"cache_dir": "a"}, per_class_impl="loop"))  # fmt: skip
    assert changes == {
        "outer_iterations": (9, 3),
        "pool.cache_dir": ("b", "a"),
        "per_class_impl": ("replay", "loop"),
    }  # for the CLI to apply and announce
    assert check_resume({"m": [1, 2]}, checkpoint(m=(1, 2))) == {}


def test_the_cli_passes_flattened_settings_and_gets_the_same_answer():
    assert check_resume(
        {"pool.cache_dir": "b", "outer_iterations": 3}, checkpoint(outer_iterations=3, pool={"cache_dir": "a"})
    ) == {"pool.cache_dir": ("b", "a")}
    with pytest.raises(ConfigError, match=r"model\.pool\.size=3 differs from 2"):
        check_resume({"pool.size": 3}, checkpoint(pool={"size": 2}))


def test_a_checkpoint_from_before_a_setting_existed_ran_with_the_earlier_behaviour():
    with pytest.raises(ConfigError, match=r"model\.net_whole_batches=True differs from False"):
        check_resume({"net_whole_batches": True}, checkpoint())
    check_resume({"net_whole_batches": False}, checkpoint())
