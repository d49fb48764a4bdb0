"""Does this CPU run bf16 natively? Read from its own feature flags, without torch.

bf16 autocast pays off on a CPU only with bf16 instructions (x86 AVX512-BF16 or AMX-BF16, arm64
BF16); elsewhere torch emulates bf16: at about half the fp32 speed on AVX-512 CPUs, at a ninth on an
AVX2-only one (an AMD EPYC, `benchmarks/results/speed-cpu-avx2*.json`). torch cannot tell the two apart:
``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` says yes on any AVX-512 CPU, and
``torch.backends.cpu.get_cpu_capability()`` names only the vector width ("AVX2", "AVX512"). So the
flags decide: /proc/cpuinfo on Linux, sysctl on macOS. Windows has no such source without CPUID
code, so there ``auto`` stays fp32 (``--precision bf16`` or ``LOOPSEG_PRECISION=bf16`` force it).
Torch-free, so the command line and the widgets can offer the choices without importing torch.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

#: Precision choices everywhere (command line, widgets, options): auto picks per device.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Environment variable that replaces ``auto`` (e.g. fp32 to measure without bf16).
PRECISION_ENV = "LOOPSEG_PRECISION"

#: Feature names of native bf16 arithmetic, lower case without underscores -> the Linux name.
_BF16 = {"avx512bf16": "avx512_bf16", "amxbf16": "amx_bf16", "bf16": "bf16"}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU model and the native bf16 features it reports (empty when none, or unknown)."""

    model: str
    bf16_flags: tuple[str, ...] = ()

    @property
    def native_bf16(self) -> bool:
        return bool(self.bf16_flags)

    def as_dict(self) -> dict:
        """For benchmark JSON: what the figures ran on."""
        return {"model": self.model, "bf16_flags": list(self.bf16_flags), "native_bf16": self.native_bf16}


def bf16_flags_in(features: str) -> tuple[str, ...]:
    """The bf16 features in a list of CPU features ("avx512f avx512_bf16 ...", any case)."""
    found = {_BF16.get(name.lower().replace("_", "")) for name in features.split()}
    return tuple(sorted(flag for flag in found if flag is not None))


def parse_cpuinfo(text: str) -> CpuInfo:
    """Model and bf16 flags of the first processor in /proc/cpuinfo (x86 ``flags``, arm64 ``Features``)."""
    model = ""
    flags: tuple[str, ...] = ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags = bf16_flags_in(value)
            break
    return CpuInfo(model or platform.processor() or platform.machine(), flags)


def _sysctl(name: str) -> str:
    try:
        result = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _read() -> CpuInfo:
    if sys.platform.startswith("linux"):
        try:
            return parse_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
        except OSError:
            pass
    elif sys.platform == "darwin":
        model = _sysctl("machdep.cpu.brand_string") or platform.machine()
        if platform.machine() == "arm64":
            return CpuInfo(model, ("bf16",) if _sysctl("hw.optional.arm.FEAT_BF16") == "1" else ())
        features = " ".join(_sysctl(f"machdep.cpu.{leaf}") for leaf in ("features", "leaf7_features"))
        return CpuInfo(model, bf16_flags_in(features))
    return CpuInfo(platform.processor() or platform.machine())


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU, read once per process."""
    return _read()


def native_bf16() -> bool:
    """True where bf16 autocast runs on native instructions, i.e. faster than fp32."""
    return cpu_info().native_bf16
