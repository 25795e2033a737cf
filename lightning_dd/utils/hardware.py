"""What the CPU can do fast: bf16 autocast only pays on CPUs with bf16 instructions."""

from __future__ import annotations

from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX512-BF16 and AMX; "bf16" on ARMv8.6+


def cpu_bf16_units(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The CPU's bf16 instruction sets named in ``cpuinfo`` (x86 ``flags`` or ARM ``Features``).

    Empty when the CPU has none (AVX2-only x86, most ARM) or the file is unreadable (not Linux):
    there, bf16 matmuls and convolutions are emulated and measured many times slower than fp32.
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.partition(":")[2].split())
            break
    return [f for f in BF16_FLAGS if f in flags]
