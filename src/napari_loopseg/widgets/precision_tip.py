"""The Precision option's tooltip, shared by both widgets."""

PRECISION_TIP = (
    "auto: bf16 on GPUs and on CPUs with native bf16 instructions (AVX512-BF16, AMX, arm64 BF16), "
    "fp32 elsewhere (emulated bf16 is 2-9x slower). Force fp32 or bf16 only if you know better."
)
