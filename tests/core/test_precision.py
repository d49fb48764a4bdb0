"""Precision ``auto`` follows the CPU's own bf16 flags, not torch's oneDNN check (which says yes on
any AVX-512 CPU, where bf16 is emulated and 2x slower than fp32; 9x on AVX2 alone)."""

import logging

import pytest
import torch

from napari_loopseg.core import cpu_features, predict
from napari_loopseg.core.cpu_features import PRECISION_ENV, CpuInfo, parse_cpuinfo
from napari_loopseg.core.predict import DeviceError, Predictor, autocast_dtype

CPU = torch.device("cpu")

XEON_AVX512 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni

processor\t: 1
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""
EPYC_BF16 = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16 vaes
"""
SAPPHIRE_RAPIDS = """model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: avx512f avx512_fp16 amx_bf16 amx_tile amx_int8
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp sve bf16 i8mm
CPU implementer\t: 0x41
"""
GRAVITON2 = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp
"""


@pytest.fixture
def fake_cpu(monkeypatch):
    """Pretend to run on the CPU a /proc/cpuinfo text describes."""
    monkeypatch.delenv(PRECISION_ENV, raising=False)

    def use(text: str) -> None:
        monkeypatch.setattr(cpu_features, "cpu_info", lambda: parse_cpuinfo(text))

    return use


def test_parse_cpuinfo_reads_model_and_bf16_flags():
    assert parse_cpuinfo(XEON_AVX512) == CpuInfo("Intel(R) Xeon(R) CPU @ 2.20GHz", ())
    assert parse_cpuinfo(EPYC_BF16) == CpuInfo("AMD EPYC 9R14", ("avx512_bf16",))
    assert parse_cpuinfo(SAPPHIRE_RAPIDS).bf16_flags == ("amx_bf16",)
    assert parse_cpuinfo(GRAVITON3).bf16_flags == ("bf16",)
    assert not parse_cpuinfo(GRAVITON2).native_bf16
    assert cpu_features.bf16_flags_in("SSE3 AVX512F AVX512_BF16") == ("avx512_bf16",)  # macOS sysctl


@pytest.mark.parametrize(
    "text, expected",
    [
        (XEON_AVX512, None),
        (EPYC_BF16, torch.bfloat16),
        (SAPPHIRE_RAPIDS, torch.bfloat16),
        (GRAVITON3, torch.bfloat16),
        (GRAVITON2, None),
    ],
)
def test_auto_is_bf16_only_with_native_bf16(fake_cpu, monkeypatch, text, expected):
    # torch's own check says yes on every one of these: it must not decide
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    fake_cpu(text)
    assert autocast_dtype(CPU, "auto") == expected
    assert Predictor(_tiny_net(), device="cpu").dtype == expected


def test_explicit_choices_and_the_environment_override(fake_cpu, monkeypatch, caplog):
    fake_cpu(EPYC_BF16)
    assert autocast_dtype(CPU, "fp32") is None
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert autocast_dtype(CPU, "auto") is None
    assert autocast_dtype(CPU, "bf16") == torch.bfloat16  # an explicit choice beats the variable
    monkeypatch.setenv(PRECISION_ENV, "half")
    with pytest.raises(DeviceError, match="LOOPSEG_PRECISION"):
        autocast_dtype(CPU, "auto")
    with pytest.raises(ValueError, match="unknown precision"):
        autocast_dtype(CPU, "fp8")
    monkeypatch.delenv(PRECISION_ENV)
    fake_cpu(XEON_AVX512)
    predict._warn_slow.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert autocast_dtype(CPU, "bf16") == torch.bfloat16  # honoured, with a warning
    assert "emulated" in caplog.text


def test_bf16_on_a_gpu_without_it_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla K80")
    with pytest.raises(DeviceError, match=r"Tesla K80\) cannot run bf16"):
        autocast_dtype(torch.device("cuda"), "bf16")
    assert autocast_dtype(torch.device("cuda"), "auto") == torch.float16


def test_fp32_on_a_cpu_is_channels_last(fake_cpu):
    fake_cpu(XEON_AVX512)
    predictor = Predictor(_tiny_net(), device="cpu")
    conv = next(m for m in predictor.net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert predictor.dtype is None
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def _tiny_net():
    from napari_loopseg.core.unet import UNet, UNetConfig

    return UNet(UNetConfig(width=4, depth=2))
