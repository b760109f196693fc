"""Steady-state throughput and memory of data-free methods on teacher→student pairs.

Measures, for each method × pair × precision variant (fp32 = the reference numerics with TF32
convolutions, bf16, and optionally torch.compile'd):

* student images/s over KD steps (sample + teacher forward + student forward/backward/step);
* synthesis iterations/s and seconds per ``synthesize()`` call (the synthesis-only time that
  Fast-Datafree's README reports, docs/METHODS.md §10.9, §13 item 10);
* peak GPU memory (CUDA only);

and projects the wall time of the method's full schedule (§8):
``warmup × rounds × synthesis + (epochs − warmup) × rounds × (synthesis + kd_steps × KD step)``
(+ evaluation, not included). The teacher has random weights: speed does not depend on them.

    python benchmarks/throughput.py --methods cudfkd,cmi --pairs resnet34:resnet18 --batch_size 256 \\
        --device cuda --variants fp32,bf16,compile

Flags of ``datafree_kd.py`` other than the ones this script sets per row (method, pair, dataset,
precision, compile, device) are passed to every row and recorded in its ``settings`` label;
anything else is refused in one line. Prints a Markdown table; ``--out FILE`` also appends it
(with the command) to FILE and adds its rows to FILE.json beside it. On a machine lent for a
limited time, ``--max_minutes`` starts no row that would overrun the budget, and the same
command rerun with ``--resume`` measures only the rows FILE.json does not hold yet.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datafree_kd  # noqa: E402
import registry  # noqa: E402
from datafree.run import distributed  # noqa: E402
from datafree.run.checkpoints import atomic_write_text, write_error  # noqa: E402
from datafree.run.cli import ArgumentParser, run_cli  # noqa: E402
from datafree.errors import UsageError  # noqa: E402
from datafree.synthesis.hooks import freeze  # noqa: E402
from datafree.run.numerics import Numerics, device_description, resolve_device, to_memory_format  # noqa: E402
from datafree.options import option_readers  # noqa: E402
from datafree.run.seeding import seed_everything  # noqa: E402

VARIANTS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "compile": ("bf16", True),
            "fp32_compile": ("fp32", True)}
#: datafree_kd.py flags that this script sets itself for every row.
ROW_FLAGS = ("--method", "--teacher", "--student", "--dataset", "--precision", "--compile", "--device")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_schedule(method: str, dataset: str, teacher_name: str, student_name: str, variant: str,
                     extra: list[str]) -> dict:
    """The resolved datafree_kd options of one row: the method's defaults plus the ``extra`` flags that it
    reads (a flag of the other measured methods, e.g. NAYER's ``--le_hidden`` in a Fast row, is left out)."""
    precision, compile_student = VARIANTS[variant]
    argv = ["--method", method, "--dataset", dataset, "--teacher", teacher_name, "--student", student_name,
            "--precision", precision, *(["--compile"] if compile_student else []),
            *flags_read_by(method, extra)]
    return datafree_kd.resolve_options(datafree_kd.build_parser().parse_args(argv), world_size=1)


def flags_read_by(method: str, extra: list[str]) -> list[str]:
    """``extra`` without the method options that ``method`` does not read (``--flag value`` or ``--flag=value``)."""
    readers = option_readers(registry.method_options())
    own = registry.get_method(method).Options.flag_names()
    kept: list[str] = []
    skip_value = False
    for index, token in enumerate(extra):
        if skip_value:
            skip_value = False
            continue
        name = token[2:].split("=")[0] if token.startswith("--") else None
        if name in readers and name not in own:
            takes_value = "=" not in token and index + 1 < len(extra) and not extra[index + 1].startswith("--")
            skip_value = takes_value
            continue
        kept.append(token)
    return kept


def row_identity(row: dict) -> tuple:
    """What makes two rows measurements of the same thing (``--resume`` skips a row already held)."""
    return tuple(row.get(key) for key in ("method", "dataset", "pair", "variant", "batch_size",
                                          "synthesis_batch_size", "device", "settings"))


def timed(function, calls: int, device: torch.device) -> float:
    """Seconds per call of ``function(index)`` over ``calls`` calls."""
    synchronize(device)
    start = time.perf_counter()
    for index in range(calls):
        function(index)
    synchronize(device)
    return (time.perf_counter() - start) / calls


def measure(method: str, dataset: str, teacher_name: str, student_name: str, device: torch.device,
            variant: str, kd_steps: int, synthesis_calls: int, warmup: int, extra: list[str],
            max_g_steps: int | None = None) -> dict:
    """Time ``synthesis_calls`` synthesize() calls and ``kd_steps`` KD steps after ``warmup`` of each.

    ``max_g_steps`` caps the synthesis iterations per measured call (ADI's 1000 are slow on a
    CPU); the time per iteration is then scaled to the schedule's ``g_steps``.
    """
    schedule = resolve_schedule(method, dataset, teacher_name, student_name, variant, extra)
    measured = ["--g_steps", str(min(schedule["g_steps"], max_g_steps))] if max_g_steps else []
    options = resolve_schedule(method, dataset, teacher_name, student_name, variant, [*extra, *measured])
    numerics = Numerics.from_options(options, device)
    seed_everything(0)
    channels = registry.get_dataset(dataset).channels
    teacher = registry.get_model(teacher_name, options["num_classes"], channels).to(device)
    teacher = to_memory_format(freeze(teacher), numerics.channels_last)
    parts = datafree_kd.build_training(options, teacher, distributed.DistributedContext(), numerics)
    synthesizer = parts.synthesizer
    warmup_synthesis = None
    if schedule["warmup"] > 0:  # warm-up epochs may synthesise differently (NAYER: more batches)
        synthesizer.begin_epoch(0)
        synthesizer.synthesize()
        warmup_synthesis = timed(lambda _: synthesizer.synthesize(), 1, device)
    synthesizer.begin_epoch(options["epochs"] // 2)  # mid-run: adversarial terms switched on
    parts.student.train()

    def kd_step(step: int) -> None:   # what the loop runs per KD tick, the method's hook included
        datafree_kd.student_step(synthesizer, teacher, parts.trained_student, parts.optimizer, parts.scaler,
                                 numerics.autocast_dtype, step)
        synthesizer.after_student_step(step)

    for _ in range(warmup):
        synthesizer.synthesize()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synthesis_seconds = timed(lambda _: synthesizer.synthesize(), synthesis_calls, device)
    for step in range(warmup):
        kd_step(step)
    kd_seconds = timed(lambda step: kd_step(warmup + step), kd_steps, device)
    return project(method, dataset, f"{teacher_name}→{student_name}", variant, device, options, schedule,
                   synthesis_seconds, kd_seconds, warmup_synthesis)


def project(method: str, dataset: str, pair: str, variant: str, device: torch.device, options: dict,
            schedule: dict, synthesis_seconds: float, kd_seconds: float, warmup_synthesis: float | None) -> dict:
    """One table row: rates, memory and the projected full-schedule time."""
    scale = schedule["g_steps"] / options["g_steps"]  # measured with fewer iterations per call
    call_seconds = synthesis_seconds * scale
    rounds = schedule["ep_steps"] // schedule["kd_steps"]
    epoch_seconds = rounds * (call_seconds + schedule["kd_steps"] * kd_seconds)
    warmup_epoch = rounds * (warmup_synthesis * scale if warmup_synthesis is not None else call_seconds)
    total = schedule["warmup"] * warmup_epoch + (schedule["epochs"] - schedule["warmup"]) * epoch_seconds
    return {"method": method, "dataset": dataset, "pair": pair, "variant": variant,
            "device": device_description(device),
            "batch_size": options["batch_size"], "synthesis_batch_size": options["synthesis_batch_size"],
            "student_images_per_second": options["batch_size"] / kd_seconds,
            "synthesis_iterations_per_second": options["g_steps"] / synthesis_seconds,
            "synthesis_seconds_per_call": call_seconds, "g_steps": schedule["g_steps"],
            "peak_memory_gb": (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else None,
            "epoch_seconds": epoch_seconds, "epochs": schedule["epochs"], "warmup": schedule["warmup"],
            "projected_synthesis_hours": schedule["epochs"] * rounds * call_seconds / 3600,
            "projected_hours": total / 3600}


def markdown(rows: list[dict]) -> str:
    header = ("| method | pair | variant | B | settings | student img/s | synth it/s | synth s/call | "
              "peak mem (GB) | s/epoch | projected synthesis (h) | projected full run (h) | device |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['method']} | {r['pair']} | {r['variant']} | {r['batch_size']} | {r.get('settings') or '-'} | "
             f"{r['student_images_per_second']:.0f} | {r['synthesis_iterations_per_second']:.2f} | "
             f"{r['synthesis_seconds_per_call']:.3g} | "
             f"{'-' if r['peak_memory_gb'] is None else format(r['peak_memory_gb'], '.2f')} | "
             f"{r['epoch_seconds']:.1f} | {r['projected_synthesis_hours']:.3g} | "
             f"{r['projected_hours']:.2f} ({r['epochs']} ep) | {r['device']} |"
             for r in rows]
    return header + "\n".join(lines) + "\n"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="benchmarks/throughput.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="cudfkd", help="comma-separated methods")
    parser.add_argument("--pairs", default="wrn40_2:wrn16_1", help="comma-separated teacher:student pairs")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", default="fp32,bf16", help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--kd_steps_measured", type=int, default=20)
    parser.add_argument("--synthesis_calls", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls and steps before timing")
    parser.add_argument("--max_g_steps", type=int, default=None,
                        help="cap synthesis iterations per measured call (time scaled to the schedule)")
    parser.add_argument("--out", default=None, help="append the table to this Markdown file (+ .json)")
    parser.add_argument("--resume", action="store_true",
                        help="skip rows that --out's FILE.json already holds for this device and settings")
    parser.add_argument("--max_minutes", type=float, default=None,
                        help="start no row that would end past this budget (estimated by the longest row so "
                             "far); rerun with --resume for the rest")
    return parser


def check_arguments(args, extra: list[str]) -> None:
    """One line for a bad value of this script's own flags, or an extra flag it sets per row."""
    for name in ("kd_steps_measured", "synthesis_calls", "max_g_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be at least 1, got {value}")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise UsageError(f"--max_minutes must be positive, got {args.max_minutes}")
    if args.resume and not args.out:
        raise UsageError("--resume continues the rows of --out FILE; give --out")
    for flag in extra:
        if flag.split("=")[0] in ROW_FLAGS:
            raise UsageError(f"{flag} is set for each row by this script; use --methods, --pairs, --dataset, "
                             "--variants or --device instead")


def read_rows(json_path: Path | None) -> list[dict]:
    """Rows an earlier command wrote to FILE.json; a malformed file is one line."""
    if json_path is None or not json_path.is_file():
        return []
    try:
        rows = json.loads(json_path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"{json_path} is not a results file written by this script ({type(error).__name__}); "
                         "move it away or choose another --out") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise UsageError(f"{json_path} is not a list of result rows; move it away or choose another --out")
    return rows


def prepare_output(out: Path) -> None:
    """Create --out's folder now, so a path that cannot be written fails before any measurement."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(out.parent, os.W_OK):
            raise PermissionError(13, "Permission denied", str(out.parent))
    except OSError as error:
        raise write_error(out, error, kept=False) from None


def planned_rows(args, extra: list[str], device: torch.device, held: set) -> list[tuple]:
    """Every (method, teacher, student, variant) to measure, checked before the first measurement."""
    methods = args.methods.split(",")
    for method in methods:
        registry.get_method(method)
    pairs = [tuple(pair.split(":")) for pair in args.pairs.split(",")]
    for pair in pairs:
        if len(pair) != 2:
            raise UsageError(f"--pairs takes teacher:student pairs separated by commas, got {args.pairs!r}")
        for name in pair:
            registry.lookup(registry.CLASSIFIERS, name, "model")
    variants = args.variants.split(",")
    for variant in variants:
        registry.lookup(VARIANTS, variant, "variant")
    description, settings = device_description(device), " ".join(extra)
    planned = []
    for method in methods:
        for teacher_name, student_name in pairs:
            for variant in variants:
                options = resolve_schedule(method, args.dataset, teacher_name, student_name, variant, extra)
                identity = row_identity({"method": method, "dataset": args.dataset, "variant": variant,
                                         "pair": f"{teacher_name}→{student_name}", "device": description,
                                         "batch_size": options["batch_size"], "settings": settings,
                                         "synthesis_batch_size": options["synthesis_batch_size"]})
                if identity not in held:
                    planned.append((method, teacher_name, student_name, variant))
    return planned


def main(argv: list[str] | None = None) -> list[dict]:
    args, extra = build_parser().parse_known_args(argv)
    check_arguments(args, extra)
    device = resolve_device(args.device)
    command = " ".join(sys.argv) if argv is None else " ".join(["benchmarks/throughput.py", *argv])
    out = Path(args.out) if args.out else None
    json_path = Path(str(out) + ".json") if out else None
    # Several commands may fill one table (e.g. one per pair within a time limit): rows
    # accumulate in FILE.json, written after every row so that an interrupted command keeps
    # what it measured.
    earlier = read_rows(json_path)
    held = {row_identity(row) for row in earlier} if args.resume else set()
    planned = planned_rows(args, extra, device, held)
    if out:
        prepare_output(out)
    if args.resume:
        print(f"--resume: {len(planned)} rows to measure ({len(held)} rows already in {json_path})")
    rows = []
    start, longest = time.monotonic(), 0.0
    for method, teacher_name, student_name, variant in planned:
        elapsed = time.monotonic() - start
        if args.max_minutes is not None and elapsed + longest > 60 * args.max_minutes:
            print(f"stopped by --max_minutes {args.max_minutes} after {len(rows)} rows; {len(planned) - len(rows)} "
                  "left: rerun the same command with --resume")
            break
        row = measure(method, args.dataset, teacher_name, student_name, device, variant,
                      args.kd_steps_measured, args.synthesis_calls, args.warmup, extra, args.max_g_steps)
        longest = max(longest, time.monotonic() - start - elapsed)
        rows.append({**row, "settings": " ".join(extra), "command": command})
        print(markdown([rows[-1]]).splitlines()[-1], flush=True)
        if json_path:
            atomic_write_text(json.dumps(earlier + rows, indent=2), json_path)
    if not rows:
        return rows
    table = markdown(rows)
    print(table)
    if out:
        try:
            with out.open("a") as file:
                file.write(f"\n`{command}`\n\n{table}")
        except OSError as error:
            raise write_error(out, error, kept=out.exists()) from None
    return rows


if __name__ == "__main__":
    run_cli(main)
