"""Steady-state throughput and memory of one method on one teacher→student pair.

Measures, for each precision variant (fp32, bf16, and optionally torch.compile'd):

* student images/s over KD steps (sample + teacher forward + student forward/backward/step);
* synthesis iterations/s (``synthesize()`` calls × g_steps);
* peak GPU memory (CUDA only);

and projects the wall time of the launcher's full schedule (METHODS.md §8):
``epochs × (rounds × seconds per synthesize() + ep_steps × seconds per KD step)`` (+ evaluation,
not included). The teacher has random weights: speed does not depend on them.

    python benchmarks/throughput.py --method cudfkd --teacher resnet34 --student resnet18 \\
        --batch_size 256 --device cuda --variants fp32,bf16,compile

Prints a Markdown table; ``--out FILE`` also appends it (with the command) to FILE and adds
its rows to FILE.json beside it. On a machine lent for a limited time, ``--max_minutes`` starts
no row that would overrun the budget, and the same command rerun with ``--resume`` measures only
the rows FILE.json does not hold yet.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datafree_kd  # noqa: E402
import registry  # noqa: E402
from datafree import distributed, engine  # noqa: E402
from datafree.errors import UsageError  # noqa: E402
from datafree.hooks import freeze  # noqa: E402

VARIANTS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "compile": ("bf16", True),
            "fp32_compile": ("fp32", True)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_schedule(method: str, dataset: str, teacher_name: str, student_name: str, variant: str,
                     extra: list[str]) -> dict:
    """The resolved datafree_kd options of one row (the method's launcher defaults plus ``extra``)."""
    precision, compile_student = VARIANTS[variant]
    argv = ["--method", method, "--dataset", dataset, "--teacher", teacher_name, "--student", student_name,
            "--precision", precision, *(["--compile"] if compile_student else []), *extra]
    return datafree_kd.resolve_options(datafree_kd.build_parser().parse_args(argv))


def row_identity(row: dict) -> tuple:
    """What makes two rows measurements of the same thing (``--resume`` skips a row already held)."""
    return tuple(row[key] for key in ("method", "dataset", "pair", "variant", "batch_size",
                                      "synthesis_batch_size", "device"))


def measure(method: str, dataset: str, teacher_name: str, student_name: str, device: torch.device,
            variant: str, kd_steps: int, synthesis_calls: int, warmup: int, extra: list[str],
            max_g_steps: int | None = None) -> dict:
    """Time ``synthesis_calls`` synthesize() calls and ``kd_steps`` KD steps after ``warmup`` of each.

    ``max_g_steps`` caps the synthesis iterations per measured call (ADI's 1000 are slow on a
    CPU); the time per iteration is then scaled to the schedule's ``g_steps``.
    """
    precision, compile_student = VARIANTS[variant]
    schedule = resolve_schedule(method, dataset, teacher_name, student_name, variant, extra)
    measured = ["--g_steps", str(min(schedule["g_steps"], max_g_steps))] if max_g_steps else []
    options = resolve_schedule(method, dataset, teacher_name, student_name, variant, [*extra, *measured])
    autocast_dtype = engine.resolve_precision(precision, device)
    channels_last = device.type == "cuda"
    engine.seed_everything(0)
    engine.configure_backends(device, deterministic=False)
    teacher = registry.get_model(teacher_name, options["num_classes"]).to(device)
    teacher = engine.to_memory_format(freeze(teacher), channels_last)
    parts = datafree_kd.build_training(options, teacher, distributed.DistributedContext(), device,
                                       autocast_dtype, channels_last)
    synthesizer = parts.synthesizer
    synthesizer.begin_epoch(options["epochs"] // 2)  # mid-run: adversarial terms switched on
    parts.student.train()

    def kd_step(step: int) -> None:
        datafree_kd.student_step(synthesizer, teacher, parts.trained_student, parts.optimizer, parts.scaler,
                                 autocast_dtype, step)

    for _ in range(warmup):
        synthesizer.synthesize()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(synthesis_calls):
        synthesizer.synthesize()
    synchronize(device)
    synthesis_seconds = (time.perf_counter() - start) / synthesis_calls

    for step in range(warmup):
        kd_step(step)
    synchronize(device)
    start = time.perf_counter()
    for step in range(kd_steps):
        kd_step(warmup + step)
    synchronize(device)
    kd_seconds = (time.perf_counter() - start) / kd_steps

    iteration_seconds = synthesis_seconds / options["g_steps"]
    rounds = schedule["ep_steps"] // schedule["kd_steps"]
    epoch_seconds = rounds * schedule["g_steps"] * iteration_seconds + rounds * schedule["kd_steps"] * kd_seconds
    return {"method": method, "dataset": dataset, "pair": f"{teacher_name}→{student_name}", "variant": variant,
            "device": engine.device_description(device),
            "batch_size": options["batch_size"], "synthesis_batch_size": options["synthesis_batch_size"],
            "student_images_per_second": options["batch_size"] / kd_seconds,
            "synthesis_iterations_per_second": 1.0 / iteration_seconds, "g_steps": schedule["g_steps"],
            "peak_memory_gb": (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else None,
            "epoch_seconds": epoch_seconds, "epochs": schedule["epochs"],
            "projected_hours": epoch_seconds * schedule["epochs"] / 3600}


def markdown(rows: list[dict]) -> str:
    header = ("| method | pair | variant | B | student img/s | synth it/s | peak mem (GB) | s/epoch | "
              "projected full run (h) | device |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['method']} | {r['pair']} | {r['variant']} | {r['batch_size']} | "
             f"{r['student_images_per_second']:.0f} | {r['synthesis_iterations_per_second']:.2f} | "
             f"{'-' if r['peak_memory_gb'] is None else format(r['peak_memory_gb'], '.2f')} | "
             f"{r['epoch_seconds']:.1f} | {r['projected_hours']:.2f} ({r['epochs']} ep) | {r['device']} |"
             for r in rows]
    return header + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="cudfkd", help="comma-separated methods")
    parser.add_argument("--pairs", default="wrn40_2:wrn16_1", help="comma-separated teacher:student pairs")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", default="fp32,bf16", help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--kd_steps_measured", type=int, default=20)
    parser.add_argument("--synthesis_calls", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--max_g_steps", type=int, default=None,
                        help="cap synthesis iterations per measured call (time scaled to the schedule)")
    parser.add_argument("--out", default=None, help="append the table to this Markdown file (+ .json)")
    parser.add_argument("--resume", action="store_true",
                        help="skip rows that --out's FILE.json already holds for this device and batch sizes")
    parser.add_argument("--max_minutes", type=float, default=None,
                        help="start no row that would end past this budget (estimated by the longest row so "
                             "far); rerun with --resume for the rest")
    args, extra = parser.parse_known_args(argv)
    if args.resume and not args.out:
        raise UsageError("--resume continues the rows of --out FILE; give --out")
    # Every name is checked before the first (possibly long) measurement.
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
    device = engine.resolve_device(args.device)
    command = " ".join(sys.argv) if argv is None else " ".join(["benchmarks/throughput.py", *argv])
    out = Path(args.out) if args.out else None
    json_path = Path(str(out) + ".json") if out else None
    # Several commands may fill one table (e.g. one per pair within a time limit): rows
    # accumulate in FILE.json, written after every row so that an interrupted command keeps
    # what it measured.
    earlier = json.loads(json_path.read_text()) if json_path and json_path.is_file() else []
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
    held = {row_identity(row) for row in earlier} if args.resume else set()
    description = engine.device_description(device)
    planned = []
    for method in methods:
        for teacher_name, student_name in pairs:
            for variant in variants:
                options = resolve_schedule(method, args.dataset, teacher_name, student_name, variant, extra)
                identity = row_identity({"method": method, "dataset": args.dataset, "variant": variant,
                                         "pair": f"{teacher_name}→{student_name}", "device": description,
                                         "batch_size": options["batch_size"],
                                         "synthesis_batch_size": options["synthesis_batch_size"]})
                if identity not in held:
                    planned.append((method, teacher_name, student_name, variant))
    if args.resume:
        print(f"--resume: {len(planned)} rows to measure ({len(methods) * len(pairs) * len(variants) - len(planned)} "
              f"already in {json_path})")
    rows = []
    start, longest = time.monotonic(), 0.0
    for method, teacher_name, student_name, variant in planned:
        elapsed = time.monotonic() - start
        if args.max_minutes is not None and elapsed + longest > 60 * args.max_minutes:
            print(f"stopped by --max_minutes {args.max_minutes} after {len(rows)} rows; {len(planned) - len(rows)} "
                  "left: rerun the same command with --resume")
            break
        row = measure(method, args.dataset, teacher_name, student_name, device, variant,
                      args.kd_steps_measured, args.synthesis_calls, args.warmup, extra,
                      args.max_g_steps)
        longest = max(longest, time.monotonic() - start - elapsed)
        rows.append({**row, "command": command})
        print(markdown([row]).splitlines()[-1], flush=True)
        if json_path:
            json_path.write_text(json.dumps(earlier + rows, indent=2))
    if not rows:
        return rows
    table = markdown(rows)
    print(table)
    if out:
        with out.open("a") as file:
            file.write(f"\n`{command}`\n\n{table}")
    return rows


if __name__ == "__main__":
    engine.run_cli(main)
