"""Machinery shared by ``train_scratch.py`` and ``datafree_kd.py``.

What lives here, and why it is shared:

* run directories that refuse to silently reuse an old run (§7 item 3),
  ``config.yaml`` dumps and ``metrics.jsonl`` / TensorBoard logging (§6.1);
* atomic checkpoints (temporary file + rename, so a crash never leaves half a file) and
  classifier checkpoints that carry architecture, class count and dataset (§7 item 12);
* seeding of python / numpy / torch and capture / restore of every RNG state (§7 item 14);
* evaluation (top-1, top-5, CE loss, optional teacher fidelity §6.3);
* mixed precision and channels_last helpers, the ``--max_minutes`` budget, SIGINT/SIGTERM
  handling, and the one-line error wrapper used by every command-line entry point.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from datafree.errors import CheckpointError, NonFiniteLossError, UsageError

CHECKPOINT_FORMAT = 1


# ----------------------------------------------------------------------------- CLI errors
def run_cli(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a command-line ``main`` and turn foreseeable errors into one line + exit code 2."""
    from datafree.data import DatasetError

    try:
        main(argv)
    except (UsageError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(3)


def require_positive(**values: float | int | None) -> None:
    """Raise UsageError naming the first argument that is not a positive number."""
    for name, value in values.items():
        if value is not None and value <= 0:
            raise UsageError(f"--{name} must be positive, got {value}")


# ----------------------------------------------------------------------------- devices, precision
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
    """``--precision auto|bf16|fp16|fp32`` -> autocast dtype (None = fp32). auto = bf16 on CUDA.

    bf16 asked for on a CPU without bf16 instructions gets a note: there it is emulated and
    far slower than fp32 (20-30x on an AVX2-only EPYC, results/benchmarks/README.md)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        print("note: this CPU has no bf16 instructions (AVX512-BF16 or AMX); bf16 runs emulated and "
              "much slower than --precision fp32")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); True when torch cannot tell."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    checks = [check for check in checks if callable(check)]
    return not checks or any(check() for check in checks)


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Speed or bitwise reproducibility of cuDNN convolutions (issue: speed; §7 item 14).

    By default on CUDA, ``cudnn.benchmark`` times the convolution algorithms once per input shape
    and keeps the fastest: every shape in the hot loop is fixed, so this is pure gain.
    ``--deterministic`` turns autotuning off and asks for deterministic algorithms everywhere:
    cuDNN's, cuBLAS's (a fixed workspace, set before the first matrix product) and PyTorch's own
    (``use_deterministic_algorithms``; e.g. the backward of the pool and bank indexing of ADI/CMI
    otherwise accumulates with atomics in a varying order). An op with no deterministic kernel
    warns instead of failing. The aim is that two runs with one seed (or a run and its
    resumption) match bit for bit on a GPU, at some speed cost.
    """
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


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


# ----------------------------------------------------------------------------- seeding
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device) (§7 item 14)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state, so that a resumed run continues the same random streams."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def derived_generator(device: torch.device, *keys: int) -> torch.Generator:
    """A generator seeded from integers (seed, epoch, step, ...): resumable without saved state."""
    generator = torch.Generator(device=device)
    value = 0
    for key in keys:
        value = (value * 1_000_003 + int(key)) % (2**63 - 1)
    generator.manual_seed(value)
    return generator


# ----------------------------------------------------------------------------- files
def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash (even ``kill -9``) at any moment leaves either the previous complete file or the
    new complete file, never a half-written one (issue: reliability).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by this package; a missing or corrupt file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}); "
                              "delete it and retrain, or point to another file") from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} was not written by datafree (no metadata dict)")
    return checkpoint


def save_classifier(path: str | Path, model: nn.Module, arch: str, num_classes: int, dataset: str,
                    **extra: Any) -> None:
    """Save a trained classifier with the metadata needed to validate it on load."""
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    atomic_save({"format": CHECKPOINT_FORMAT, "kind": "classifier", "arch": arch,
                 "num_classes": num_classes, "dataset": dataset, "state_dict": state, **extra}, path)


def load_classifier(path: str | Path, model: nn.Module, arch: str, num_classes: int,
                    dataset: str | None) -> dict[str, Any]:
    """Load weights into ``model`` after checking architecture, class count and dataset.

    Accepts checkpoints of ``train_scratch.py`` (``best.pth``/``last.pth``/the pretrained copy).
    Every mismatch is a one-line CheckpointError naming both sides.
    """
    checkpoint = load_checkpoint(path)
    if "state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint {path} holds no 'state_dict'; it is not a classifier checkpoint")
    saved_arch = checkpoint.get("arch")
    if saved_arch is not None and saved_arch != arch:
        raise CheckpointError(f"checkpoint {path} is a {saved_arch}, not a {arch}; "
                              f"pass --teacher {saved_arch} or another checkpoint")
    saved_classes = checkpoint.get("num_classes")
    if saved_classes is not None and saved_classes != num_classes:
        raise CheckpointError(f"checkpoint {path} has {saved_classes} classes but {num_classes} are "
                              "expected; use a checkpoint trained on this dataset")
    saved_dataset = checkpoint.get("dataset")
    if dataset is not None and saved_dataset is not None and saved_dataset != dataset:
        raise CheckpointError(f"checkpoint {path} was trained on {saved_dataset}, not {dataset}; "
                              f"pass --dataset {saved_dataset} or another checkpoint")
    try:
        unwrap(model).load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit {arch} ({first_line})") from error
    return checkpoint


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


# ----------------------------------------------------------------------------- run directory
def prepare_run_directory(save_dir: str | Path, resume: bool, overwrite: bool) -> Path:
    """Create (or validate) a run directory.

    A directory that already holds a run is refused unless ``--resume`` (continue it) or
    ``--overwrite`` (delete its run files first) is given: an old run is never silently reused.
    """
    path = Path(save_dir)
    run_files = ("config.yaml", "metrics.jsonl", "last.pth", "best.pth", "summary.json")
    for stale in path.glob(".*.tmp") if path.is_dir() else ():  # left by a kill -9 during a save
        stale.unlink()
    has_run = path.is_dir() and any((path / name).exists() for name in run_files)
    if resume:
        if not (path / "last.pth").is_file():
            raise UsageError(f"--resume given but {path / 'last.pth'} does not exist; "
                             "drop --resume to start a new run")
        return path
    if has_run:
        if not overwrite:
            raise UsageError(f"{path} already holds a run; pass --resume to continue it, "
                             "--overwrite to replace it, or choose another --save_dir")
        for name in run_files:
            with contextlib.suppress(FileNotFoundError):
                (path / name).unlink()
        for event_file in path.glob("events.out.tfevents.*"):
            event_file.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def environment_info(device: torch.device) -> dict[str, Any]:
    """Library versions and device, recorded in config.yaml for reproducibility (§7 item 14)."""
    info: dict[str, Any] = {"python": platform.python_version(), "torch": str(torch.__version__),
                            "numpy": str(np.__version__), "device": str(device),
                            "hostname": platform.node(), "command": " ".join(sys.argv)}
    info["gpu" if device.type == "cuda" else "cpu"] = device_description(device)
    return info


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


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Dump the resolved configuration as ``config.yaml`` (atomically)."""
    text = yaml.safe_dump(config, sort_keys=False)
    temporary = run_dir / ".config.yaml.tmp"
    temporary.write_text(text)
    os.replace(temporary, run_dir / "config.yaml")


def read_config(run_dir: Path) -> dict[str, Any]:
    """Read ``config.yaml`` back (used by --resume to check the run is the same)."""
    return yaml.safe_load((run_dir / "config.yaml").read_text())


class MetricsLogger:
    """Per-epoch metrics to ``metrics.jsonl`` (one JSON object per line) and TensorBoard.

    On resume, lines for epochs at or after the resumed epoch are dropped first, so that an
    epoch interrupted after logging is not recorded twice. TensorBoard is optional: if it does
    not import, only the JSON lines are written.
    """

    def __init__(self, run_dir: Path, start_epoch: int = 0, enabled: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        if start_epoch > 0 and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if self._epoch_of(line) < start_epoch]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=start_epoch)
        except Exception as error:  # tensorboard missing or broken: keep the JSON log
            print(f"note: TensorBoard logging disabled ({type(error).__name__}: {error})")

    @staticmethod
    def _epoch_of(line: str) -> float:
        """The epoch of a logged line; an unreadable line (a write cut by a crash) counts as never logged."""
        try:
            return json.loads(line)["epoch"]
        except (ValueError, KeyError, TypeError):
            return float("inf")

    def log(self, record: dict[str, Any]) -> None:
        """Append one epoch's record; numeric values also go to TensorBoard under their key."""
        if not self.enabled:
            return
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key.replace("loss_", "loss/", 1), value, record["epoch"])
            self.writer.flush()

    def log_images(self, tag: str, images: torch.Tensor, epoch: int, max_images: int = 64) -> None:
        """A grid of images in [0, 1] (N,3,H,W) to TensorBoard."""
        if self.enabled and self.writer is not None:
            grid = make_grid(images[:max_images].detach().float().cpu().clamp(0, 1))
            self.writer.add_image(tag, grid, epoch)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def make_grid(images: torch.Tensor, padding: int = 2) -> torch.Tensor:
    """Tile (N,C,H,W) images into one (C, H', W') image, rows of ceil(sqrt(N)) (no torchvision)."""
    count, channels, height, width = images.shape
    columns = max(1, int(np.ceil(np.sqrt(count))))
    rows = int(np.ceil(count / columns))
    grid = images.new_zeros(channels, rows * (height + padding) + padding,
                            columns * (width + padding) + padding)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[:, top:top + height, left:left + width] = images[index]
    return grid


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             autocast_dtype: torch.dtype | None = None, teacher: nn.Module | None = None) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy on labelled batches (§3.6, §6.1).

    With ``teacher`` also the fidelity metrics of §6.3 (Agreement@1, probability loyalty).
    Sums stay on the device; one host sync at the end.
    """
    from datafree.fidelity import FidelityMeter

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct1 = torch.zeros((), device=device)
    correct5 = torch.zeros((), device=device)
    loss_sum = torch.zeros((), device=device)
    count = 0
    fidelity = FidelityMeter() if teacher is not None else None
    for images, labels in batches:
        with autocast(device, autocast_dtype):
            logits = model(images)
            teacher_logits = teacher(images) if teacher is not None else None
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top5.eq(labels[:, None])
        correct1 += hits[:, 0].sum()
        correct5 += hits.any(dim=1).sum()
        count += labels.shape[0]
        if fidelity is not None:
            fidelity.update(logits, teacher_logits.float())
    model.train(was_training)
    if count == 0:
        raise UsageError("evaluation set is empty")
    result = {"acc1": 100.0 * correct1.item() / count, "acc5": 100.0 * correct5.item() / count,
              "loss": loss_sum.item() / count}
    if fidelity is not None:
        result.update(fidelity.compute())
    return result


# ----------------------------------------------------------------------------- budgets and signals
class TimeBudget:
    """``--max_minutes``: tells the loop when to stop cleanly (None or <= 0 = unlimited)."""

    def __init__(self, max_minutes: float | None) -> None:
        self.deadline = time.monotonic() + max_minutes * 60 if max_minutes and max_minutes > 0 else None

    def exhausted(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


class StopRequest:
    """Turns SIGINT / SIGTERM into a flag the training loop checks after each step.

    The loop then writes ``last.pth`` and exits with a message saying how to resume, instead of
    dying in the middle of a step. A second signal falls through to the default behaviour.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


@dataclass
class LossWatch:
    """Detects NaN / infinite losses without a host sync per step (issue: reliability).

    ``observe`` records, on the device, the first (step, term) whose value was not finite;
    ``check`` (called at logging points) syncs once and raises NonFiniteLossError naming
    epoch, step and loss term.
    """

    device: torch.device
    term_names: list[str] = field(default_factory=list)
    first_bad_step: torch.Tensor | None = None
    first_bad_term: torch.Tensor | None = None

    def reset(self) -> None:
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.first_bad_term = torch.full((), -1, dtype=torch.long, device=self.device)

    def observe(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        if self.first_bad_step is None:
            self.reset()
        for name, value in terms.items():
            if name not in self.term_names:
                self.term_names.append(name)
            bad = ~torch.isfinite(value.detach()).all() & (self.first_bad_step < 0)
            self.first_bad_step = torch.where(bad, torch.full_like(self.first_bad_step, step), self.first_bad_step)
            self.first_bad_term = torch.where(bad, torch.full_like(self.first_bad_term, self.term_names.index(name)),
                                              self.first_bad_term)

    def check(self, epoch: int) -> None:
        if self.first_bad_step is None:
            return
        step = int(self.first_bad_step.item())
        if step >= 0:
            term = self.term_names[int(self.first_bad_term.item())]
            raise NonFiniteLossError(f"non-finite loss '{term}' at epoch {epoch}, step {step}; "
                                     "last.pth keeps the last good state (lower --lr / --lr_g, or "
                                     "pass --nan_policy skip to skip such batches)")


def all_finite(tensors: Iterator[torch.Tensor]) -> bool:
    """True when every tensor is finite (one host sync); used by ``--nan_policy skip``."""
    flags = [torch.isfinite(t).all() for t in tensors]
    return bool(torch.stack(flags).all().item()) if flags else True
