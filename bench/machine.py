"""The machine a benchmark ran on, as every raw result file records it: the CPU model, whether it multiplies
bfloat16 natively (AVX512-BF16 or AMX), any instruction-set cap that makes it stand in for an AVX2-only CPU, the
core count, torch and its threads, and the load average (figures taken on a busy machine say so)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

# Environment variables that cap the instruction sets torch's kernels use: set together to AVX2, they make an
# AVX-512 machine run the kernels an AVX2-only CPU runs (not its microarchitecture: an emulation, said as such).
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def cpu() -> tuple[str, set[str]]:
    """The CPU's model name and its flags, from /proc/cpuinfo where there is one."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        lines = _cpuinfo()
        name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), name)
        flags = set(next((line for line in lines if line.startswith("flags")), "").split())
    except OSError:
        pass
    return name, flags


def family_model() -> str:
    """The CPU's family and model numbers ("25/17"): a VM's model name may be only "AMD EPYC", and on AMD family 25
    model 17 is Zen 4, family 26 Zen 5."""
    try:
        fields = dict(line.split(":", 1) for line in _cpuinfo() if ":" in line)
    except OSError:
        return "?"
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}"


def _cpuinfo() -> list[str]:
    """The first processor's lines of /proc/cpuinfo (OSError where there is none)."""
    text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    return text.split("\n\n", 1)[0].splitlines()


def describe() -> dict[str, object]:
    """What a raw result file says about the machine (call it again at the end for the load average after)."""
    name, flags = cpu()
    caps = {k: os.environ[k] for k in ISA_CAPS if k in os.environ}
    return {
        "cpu": name,
        "family_model": family_model(),
        "avx512_bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
        "isa_caps": caps,
        "emulates_avx2": bool(caps) and all(v.lower() == "avx2" for v in caps.values()),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def kind(m: dict[str, object]) -> str:
    """One phrase for a figure: "AMD EPYC, 2 cores, AVX512-BF16" or "..., AVX2 only (emulated: ISA capped)"."""
    if m["emulates_avx2"]:
        isa = "AVX2 only (emulated: ISA capped)"
    else:
        isa = "AVX512-BF16" if m["avx512_bf16"] else "no AVX512-BF16"
    return f"{m['cpu']}, {m['cores']} cores, {isa}"
