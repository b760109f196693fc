"""Where and in which number format a run computes: device, precision, backends, compilation.

* ``--precision`` defaults to **fp32**, the reference numerics (METHODS.md §7 item 22): every
  published run used FP32, with cuDNN's TF32 convolutions that PyTorch enables by default on
  Ampere and later GPUs. This module leaves those PyTorch defaults as they are. ``bf16`` and
  ``fp16`` (autocast of the forward passes, fp32 weights; fp16 with loss scaling) are the fast
  mode whose accuracy parity with the published numbers is not yet measured.
* ``--deterministic`` and cuDNN autotuning (:func:`configure_backends`), ``channels_last``,
  ``torch.compile`` with an eager fallback, peak-memory readings, and a description of the
  hardware for ``config.yaml`` and benchmark rows.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from datafree.errors import UsageError

#: ``--precision`` choices -> autocast dtype (None = no autocast, fp32 with TF32 convolutions).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | None) -> torch.device:
    """``--device``: default CUDA when available, else CPU; an unusable choice is a UsageError."""
    if not name or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"unknown --device '{name}' (use cpu, cuda or cuda:N)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} requested but CUDA is not available; use --device cpu")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """``--precision fp32|bf16|fp16`` -> autocast dtype (None = fp32).

    bf16 asked for on a CPU without bf16 instructions gets a note: there it is emulated and
    far slower than fp32 (20-30x on an AVX2-only EPYC, results/benchmarks/README.md)."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown --precision '{precision}'; valid: {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        print("note: this CPU has no bf16 instructions (AVX512-BF16 or AMX); bf16 runs emulated and "
              "much slower than --precision fp32")
    return PRECISIONS[precision]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); True when torch cannot tell."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    checks = [check for check in checks if callable(check)]
    return not checks or any(check() for check in checks)


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Speed or bitwise reproducibility of cuDNN convolutions (§7 item 14).

    By default on CUDA, ``cudnn.benchmark`` times the convolution algorithms once per input shape
    and keeps the fastest: every shape in the hot loop is fixed, so this is pure gain.
    ``--deterministic`` turns autotuning off and asks for deterministic algorithms everywhere:
    cuDNN's, cuBLAS's (a fixed workspace, set before the first matrix product) and PyTorch's own
    (``use_deterministic_algorithms``; e.g. the backward of the pool and bank indexing of ADI/CMI
    otherwise accumulates with atomics in a varying order). An op with no deterministic kernel
    warns instead of failing. TF32 settings are left at PyTorch's defaults (reference numerics).
    """
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@dataclass(frozen=True)
class Numerics:
    """The resolved numerics of a run: device, autocast dtype (None = fp32), memory format."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool

    @classmethod
    def from_options(cls, options: dict[str, Any], device: torch.device) -> "Numerics":
        """Resolve ``--precision`` and ``--channels_last`` and configure the backends, before any
        CUDA kernel runs."""
        dtype = resolve_precision(options["precision"], device)
        channels_last = options["channels_last"] == "on" or (options["channels_last"] == "auto"
                                                             and device.type == "cuda")
        configure_backends(device, options["deterministic"])
        return cls(device, dtype, channels_last)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast context for the forward passes; a no-op in fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_memory_format(module: nn.Module, channels_last: bool) -> nn.Module:
    """Move a module's 4-D weights to channels_last when asked (faster convs on CUDA)."""
    return module.to(memory_format=torch.channels_last) if channels_last else module


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak allocated CUDA memory in MiB since the last reset; None on CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def memory_bytes(device: torch.device) -> int | None:
    """Total memory of ``device`` in bytes (GPU memory, or the machine's RAM); None if unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def maybe_compile(module: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile`` behind a flag, falling back to eager where it is unavailable.

    ``torch.compile`` fails either at once (no dynamo on this platform) or lazily at the first
    call (no C++ compiler / Triton): both cases end in eager execution with a one-line note.
    """
    if not enabled:
        return module
    try:
        compiled = torch.compile(module)
    except Exception as error:  # compile backends are optional; eager always works
        print(f"note: torch.compile unavailable ({type(error).__name__}); running eager")
        return module
    return EagerFallback(module, compiled)


class EagerFallback(nn.Module):
    """Calls the compiled module; if its first call fails, switches to the eager module for good."""

    def __init__(self, module: nn.Module, compiled: Callable[..., Any]) -> None:
        super().__init__()
        self.module = module
        self._compiled = [compiled]  # in a list: not registered as a second copy of the weights
        self.compiled_ok: bool | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled_ok is not False:
            try:
                output = self._compiled[0](*args, **kwargs)
                self.compiled_ok = True
                return output
            except Exception as error:
                if self.compiled_ok:  # it worked before: a real error, not a missing backend
                    raise
                self.compiled_ok = False
                first_line = (str(error).strip().splitlines() or [""])[0][:160]
                print(f"note: torch.compile failed at first call ({type(error).__name__}: {first_line}); "
                      "running eager")
        return self.module(*args, **kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, EagerFallback
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def device_description(device: torch.device) -> str:
    """What ran the numbers: the GPU's name, or the CPU's model, core count and the vector
    instructions torch uses (they decide CPU speed, bf16 above all: ``resolve_precision``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    capability = torch.backends.cpu.get_cpu_capability()
    bf16 = ", bf16" if cpu_has_native_bf16() else ", no bf16"
    return f"{model}, {os.cpu_count()} cores, {capability}{bf16}"


def environment_info(device: torch.device) -> dict[str, Any]:
    """Library versions and device, recorded in config.yaml for reproducibility (§7 item 14)."""
    info: dict[str, Any] = {"python": platform.python_version(), "torch": str(torch.__version__),
                            "numpy": str(np.__version__), "device": str(device),
                            "hostname": platform.node(), "command": " ".join(sys.argv)}
    info["gpu" if device.type == "cuda" else "cpu"] = device_description(device)
    return info
