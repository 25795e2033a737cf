"""cpu_bf16_units reads the instruction-set flags of /proc/cpuinfo."""

from lightning_dd.utils.hardware import cpu_bf16_units


def test_x86_flags_with_and_without_bf16(tmp_path):
    sapphire = tmp_path / "spr"
    sapphire.write_text(
        "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\nprocessor\t: 1\n"
    )
    assert cpu_bf16_units(sapphire) == ["avx512_bf16", "amx_bf16"]
    milan = tmp_path / "milan"
    milan.write_text("processor\t: 0\nflags\t\t: fpu avx avx2 fma f16c\n")
    assert cpu_bf16_units(milan) == []


def test_arm_features_and_unreadable_file(tmp_path):
    graviton = tmp_path / "arm"
    graviton.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert cpu_bf16_units(graviton) == ["bf16"]
    assert cpu_bf16_units(tmp_path / "missing") == []
