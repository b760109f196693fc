"""Data-free knowledge distillation: ``python datafree_kd.py --method cudfkd ...`` (METHODS.md §3.4).

One method-agnostic loop; everything method-specific is behind the Synthesizer interface
(``datafree/synthesis/base.py``). Per-method defaults (§4.7, §5.8) fill every flag left unset;
the resolved values are printed at start and written to ``config.yaml``.

Real data is read only through the **test** split, for evaluation (§2.1): the training split
is never opened. Multi-GPU / multi-node: launch with ``torchrun`` (see README).

Checkpoints are full-state (student, synthesizer with generator / pool / bank / RNG, optimizer,
scheduler, counters), written atomically to ``last.pth`` at every epoch end and whenever the
run is stopped by ``--max_minutes``, SIGINT or SIGTERM; ``--resume`` continues exactly.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

import registry
from datafree import distributed, engine
from datafree.cli import add_common_arguments, check_resume_config, resolved_config, resume_hint
from datafree.data import TensorLoader, download, load_split
from datafree.errors import CheckpointError, UsageError
from datafree.hooks import freeze
from datafree.models import Normalizer
from datafree.synthesis.base import SynthesisSetup, Synthesizer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Data-free knowledge distillation. Unset hyperparameters take the method's "
                    "published defaults (METHODS.md §4.7, §5.8).")
    parser.add_argument("--method", required=True, help=f"one of: {', '.join(registry.METHODS)}")
    parser.add_argument("--teacher", required=True, help="teacher architecture, e.g. wrn40_2")
    parser.add_argument("--student", required=True, help="student architecture, e.g. wrn16_1")
    parser.add_argument("--teacher_ckpt", default=None,
                        help="teacher checkpoint (default checkpoints/pretrained/<dataset>_<teacher>.pth)")
    group = parser.add_argument_group("schedule (default: the method's)")
    group.add_argument("--epochs", type=int, default=None)
    group.add_argument("--batch_size", type=int, default=None, help="student (KD) batch B")
    group.add_argument("--synthesis_batch_size", type=int, default=None, help="Bs (default = B)")
    group.add_argument("--ep_steps", type=int, default=None, help="KD steps per epoch (400)")
    group.add_argument("--kd_steps", type=int, default=None, help="KD steps per synthesis round")
    group.add_argument("--g_steps", type=int, default=None, help="synthesis iterations per round")
    group.add_argument("--lr", type=float, default=None, help="student SGD learning rate")
    group.add_argument("--lr_g", type=float, default=None, help="generator / pixel / latent learning rate")
    group.add_argument("--beta1", type=float, default=None, help="Adam beta1 of the synthesizer")
    group.add_argument("--beta2", type=float, default=None, help="Adam beta2 of the synthesizer")
    group.add_argument("--momentum", type=float, default=0.9)
    group.add_argument("--weight_decay", type=float, default=1e-4)
    group.add_argument("--T", type=float, default=None,
                       help="KD temperature (DAFL/ZSKT/DFQ 1, ADI/CMI 20, CuDFKD per script)")
    weights = parser.add_argument_group("loss weights (default: the method's)")
    weights.add_argument("--adv", type=float, default=None, help="adversarial (teacher-student disagreement)")
    weights.add_argument("--bn", type=float, default=None, help="BN-statistics matching")
    weights.add_argument("--oh", type=float, default=None, help="one-hot / target-label cross-entropy")
    weights.add_argument("--act", type=float, default=None, help="DAFL activation prior")
    weights.add_argument("--balance", type=float, default=None, help="class balance (batch-mean entropy)")
    weights.add_argument("--cr", type=float, default=None, help="CMI contrastive loss")
    weights.add_argument("--cr_T", type=float, default=None, help="CMI contrastive temperature")
    weights.add_argument("--nz", type=int, default=None, help="generator latent size")
    weights.add_argument("--ngf", type=int, default=None, help="generator width (64 in every published setting)")
    add_method_arguments(parser)
    parser.add_argument("--log_fidelity", action="store_true",
                        help="log Agreement@1 and probability loyalty on the test set (§6.3)")
    parser.add_argument("--log_tag", default="", help="suffix of the default run directory name")
    add_common_arguments(parser)
    return parser


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that only some methods read, each added once by the class that defines it."""
    added: set[type] = set()
    for method in registry.METHODS.values():
        for cls in reversed(method.__mro__):
            if "add_arguments" in cls.__dict__ and cls not in added:
                added.add(cls)
                title = f"{cls.__name__} options ({(cls.__doc__ or '').strip().splitlines()[0]})"
                cls.__dict__["add_arguments"].__func__(cls, parser.add_argument_group(title))


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Fill unset flags from the method's defaults, validate, and return the resolved config."""
    method = registry.get_method(args.method)
    info = registry.get_dataset(args.dataset)
    registry.lookup(registry.CLASSIFIERS, args.teacher, "model")
    registry.lookup(registry.CLASSIFIERS, args.student, "model")
    options = resolved_config(args)
    for key, value in method.DEFAULTS.items():
        if options.get(key) is None:
            options[key] = value
    method.finalize_options(options)
    options = {key: value for key, value in options.items()
               if value is not None or key in ("save_dir", "max_minutes", "num_threads", "teacher_ckpt")}
    if options.get("synthesis_batch_size") is None:
        options["synthesis_batch_size"] = options["batch_size"]
    engine.require_positive(epochs=options["epochs"], batch_size=options["batch_size"],
                            synthesis_batch_size=options["synthesis_batch_size"], ep_steps=options["ep_steps"],
                            kd_steps=options["kd_steps"], g_steps=options.get("g_steps"), lr=options["lr"],
                            T=options.get("T"), log_interval=options["log_interval"])
    if options["kd_steps"] > options["ep_steps"]:
        raise UsageError(f"--kd_steps ({options['kd_steps']}) exceeds --ep_steps ({options['ep_steps']}): "
                         "an epoch would have no synthesis round")
    method.check_options(options)
    if options["teacher_ckpt"] is None:
        options["teacher_ckpt"] = f"checkpoints/pretrained/{args.dataset}_{args.teacher}.pth"
    if options["save_dir"] is None:
        tag = f"_{args.log_tag}" if args.log_tag else ""
        options["save_dir"] = (f"runs/{args.method}/{args.dataset}_{args.teacher}_{args.student}"
                               f"{tag}_seed{args.seed}")
    options["num_classes"] = info.num_classes
    return options


def load_teacher(options: dict[str, Any], device: torch.device, channels_last: bool) -> nn.Module:
    """Build, load and freeze the teacher; a missing / wrong checkpoint is a one-line error."""
    path = Path(options["teacher_ckpt"])
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}; train one with "
                              f"`python train_scratch.py --model {options['teacher']} --dataset {options['dataset']}` "
                              "or pass --teacher_ckpt")
    teacher = registry.get_model(options["teacher"], options["num_classes"])
    engine.load_classifier(path, teacher, options["teacher"], options["num_classes"], options["dataset"])
    return engine.to_memory_format(freeze(teacher.to(device)), channels_last)


def fingerprint(module: nn.Module) -> str:
    """A short checksum of a module's weights (to compare ranks or runs by eye)."""
    total = sum(float(p.detach().double().abs().sum()) for p in engine.unwrap(module).parameters())
    return f"{total:.10e}"


@dataclass
class TrainingParts:
    """What the loop trains: the student (plain and as trained: compiled / DDP), the synthesizer,
    and the student's optimizer, cosine schedule (§3.3) and gradient scaler (fp16 only)."""

    student: nn.Module
    trained_student: nn.Module
    synthesizer: Synthesizer
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def build_training(options: dict[str, Any], teacher: nn.Module, context: distributed.DistributedContext,
                   device: torch.device, autocast_dtype: torch.dtype | None, channels_last: bool) -> TrainingParts:
    """Build student, synthesizer and optimisation for a resolved configuration."""
    info = registry.get_dataset(options["dataset"])
    student = engine.to_memory_format(registry.get_model(options["student"], options["num_classes"]).to(device),
                                      channels_last)
    setup = SynthesisSetup(teacher=teacher, student=student, normalizer=Normalizer(info.mean, info.std).to(device),
                           num_classes=options["num_classes"], dataset=options["dataset"],
                           teacher_name=options["teacher"], batch_size=options["batch_size"],
                           synthesis_batch_size=options["synthesis_batch_size"], epochs=options["epochs"],
                           device=device, autocast_dtype=autocast_dtype, channels_last=channels_last,
                           seed=options["seed"], rank=context.rank, world_size=context.world_size)
    synthesizer = registry.get_method(options["method"])(setup, options)
    if context.enabled:
        synthesizer.distribute(lambda module: distributed.wrap(module, context, device))
    trained_student = distributed.wrap(engine.maybe_compile(student, options["compile"]), context, device)
    optimizer = torch.optim.SGD(student.parameters(), lr=options["lr"], momentum=options["momentum"],
                                weight_decay=options["weight_decay"], foreach=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=options["epochs"], eta_min=0)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    return TrainingParts(student, trained_student, synthesizer, optimizer, scheduler, scaler)


def student_step(synthesizer: Synthesizer, teacher: nn.Module, trained_student: nn.Module,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 autocast_dtype: torch.dtype | None, kd_step: int, skip_nonfinite: bool = False,
                 ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor], int]:
    """One KD step (§3.4): sample, teacher forward (no grad), student forward/backward, SGD step.

    Returns the loss (None when ``skip_nonfinite`` skipped a NaN/inf batch), the method's extra
    terms and the batch size. No host synchronisation unless ``skip_nonfinite``.
    """
    images = synthesizer.sample()
    device = images.device
    with torch.no_grad(), engine.autocast(device, autocast_dtype):
        teacher_logits = teacher(images)
    with engine.autocast(device, autocast_dtype):
        student_logits = trained_student(images)
    loss, terms = synthesizer.student_loss(student_logits.float(), teacher_logits.float(), kd_step)
    if skip_nonfinite and not engine.all_finite(iter([loss])):
        return None, {}, images.shape[0]
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), terms, images.shape[0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    options = resolve_options(args)
    if options.get("num_threads"):
        torch.set_num_threads(options["num_threads"])
    context, device_name = distributed.init_from_environment(options["device"])
    try:
        return distill(options, context, engine.resolve_device(device_name))
    finally:
        distributed.shutdown(context)


def distill(options: dict[str, Any], context: distributed.DistributedContext,
            device: torch.device) -> dict[str, Any]:
    """The generic loop of §3.4 with evaluation, logging, checkpoints and resumption."""
    info = registry.get_dataset(options["dataset"])
    autocast_dtype = engine.resolve_precision(options["precision"], device)
    channels_last = options["channels_last"] == "on" or (options["channels_last"] == "auto" and device.type == "cuda")
    engine.configure_backends(device, options["deterministic"])  # before any CUDA kernel runs
    is_main = context.is_main

    # Inputs are validated (teacher, data) before the run directory is touched, so a bad
    # input never leaves a half-created run behind.
    teacher = load_teacher(options, device, channels_last)
    # Data-free: only the test split is read, for evaluation (§2.1).
    test_batches = None
    if is_main:
        if options["download"]:
            download(options["data_root"], options["dataset"])
        test_images, test_labels = load_split(options["data_root"], options["dataset"], "test")
        test_batches = TensorLoader(test_images.to(device), test_labels.to(device),
                                    batch_size=options["batch_size"], shuffle=False, augment=False,
                                    mean=info.mean, std=info.std, channels_last=channels_last)

    run_dir = Path(options["save_dir"])
    checkpoint = None
    if is_main:
        engine.prepare_run_directory(run_dir, options["resume"], options["overwrite"])
    distributed.barrier(context)
    if options["resume"]:
        checkpoint = engine.load_checkpoint(run_dir / "last.pth")
        check_resume_config(checkpoint["config"], options)
    elif is_main:
        engine.write_config(run_dir, {**options, "world_size": context.world_size,
                                      "environment": engine.environment_info(device)})
    if is_main:
        print("resolved configuration:\n" + "\n".join(f"  {k}: {v}" for k, v in options.items()))

    engine.seed_everything(options["seed"])
    parts = build_training(options, teacher, context, device, autocast_dtype, channels_last)
    student, trained_student, synthesizer = parts.student, parts.trained_student, parts.synthesizer
    optimizer, scheduler, scaler = parts.optimizer, parts.scheduler, parts.scaler

    rounds_per_epoch = options["ep_steps"] // options["kd_steps"]
    position = {"epoch": 0, "round": 0, "kd_in_round": 0, "kd_step": 0}
    best_acc1, best_fidelity = 0.0, {}
    partial: dict[str, Any] = {}
    if checkpoint is not None:
        try:
            student.load_state_dict(checkpoint["state_dict"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            scaler.load_state_dict(checkpoint["scaler"])
            synthesizer.load_state_dict(checkpoint["synthesizer"])
            engine.restore_rng_state(checkpoint["rng"])
            position, best_acc1 = dict(checkpoint["position"]), checkpoint["best_acc1"]
            best_fidelity, partial = checkpoint.get("best_fidelity", {}), checkpoint["partial_epoch"]
        except KeyError as error:
            raise CheckpointError(f"{run_dir / 'last.pth'} lacks the entry {error}: it was written by another "
                                  "version of datafree and cannot be resumed; start anew with --overwrite") from None
        if is_main:
            print(f"resuming {run_dir} at epoch {position['epoch']}, round {position['round']}, "
                  f"KD step {position['kd_in_round']} of the round")

    logger = engine.MetricsLogger(run_dir, position["epoch"], enabled=is_main)
    budget = engine.TimeBudget(options["max_minutes"])
    watch = engine.LossWatch(device)
    skip_nonfinite = options["nan_policy"] == "skip"
    record: dict[str, Any] = {}

    def save_last(sums: dict[str, Any]) -> None:
        if not is_main:
            return
        engine.atomic_save({
            "format": engine.CHECKPOINT_FORMAT, "kind": "distillation_run", "arch": options["student"],
            "num_classes": options["num_classes"], "dataset": options["dataset"],
            "state_dict": student.state_dict(),  # loadable as a classifier by load_classifier
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "synthesizer": synthesizer.state_dict(),
            "position": dict(position), "best_acc1": best_acc1, "best_fidelity": best_fidelity,
            "partial_epoch": sums, "rng": engine.capture_rng_state(), "config": options}, run_dir / "last.pth")

    with engine.StopRequest() as stop:
        while position["epoch"] < options["epochs"]:
            epoch = position["epoch"]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            schedule = synthesizer.begin_epoch(epoch)
            sums = {name: torch.tensor(value, device=device) for name, value in partial.get("terms", {}).items()}
            counts: dict[str, int] = dict(partial.get("counts", {}))
            seconds, images_seen = partial.get("seconds", 0.0), partial.get("images", 0)
            partial = {}
            watch.reset()
            student.train()
            epoch_start = time.perf_counter()
            bar = tqdm(total=rounds_per_epoch * options["kd_steps"], desc=f"epoch {epoch}", leave=False,
                       disable=not (options["progress"] and is_main),
                       initial=position["round"] * options["kd_steps"] + position["kd_in_round"])

            def accumulate(terms: dict[str, torch.Tensor]) -> None:
                for name, value in terms.items():
                    sums[name] = sums.get(name, torch.zeros((), device=device)) + value.detach().float()
                    counts[name] = counts.get(name, 0) + 1

            stopped = False
            while position["round"] < rounds_per_epoch and not stopped:
                if position["kd_in_round"] == 0:
                    synthesis_terms = synthesizer.synthesize()
                    watch.observe(position["kd_step"], synthesis_terms)
                    accumulate(synthesis_terms)
                while position["kd_in_round"] < options["kd_steps"]:
                    loss, terms, batch = student_step(synthesizer, teacher, trained_student, optimizer, scaler,
                                                      autocast_dtype, position["kd_step"], skip_nonfinite)
                    if loss is not None:
                        watch.observe(position["kd_step"], {"loss_student": loss})
                        accumulate({"loss_student": loss, **terms})
                    images_seen += batch
                    position["kd_in_round"] += 1
                    position["kd_step"] += 1
                    bar.update(1)
                    if position["kd_step"] % options["log_interval"] == 0:
                        watch.check(epoch)
                    if not context.enabled and (stop.requested or budget.exhausted()):
                        stopped = True
                        break
                if position["kd_in_round"] >= options["kd_steps"]:
                    position["round"] += 1
                    position["kd_in_round"] = 0
                if context.enabled:
                    stopped = distributed.any_rank(stop.requested or budget.exhausted(), context, device)
                if stopped and position["round"] < rounds_per_epoch:
                    watch.check(epoch)
                    seconds += time.perf_counter() - epoch_start
                    save_last({"terms": {k: float(v) for k, v in sums.items()}, "counts": counts,
                               "seconds": seconds, "images": images_seen})
                    if is_main:
                        reason = stop.signal_name or f"--max_minutes {options['max_minutes']}"
                        print(f"stopped by {reason} at epoch {epoch}, round {position['round']}, "
                              f"KD step {position['kd_in_round']}; checkpoint {run_dir / 'last.pth'}; "
                              f"continue with: {resume_hint()}")
                    bar.close()
                    logger.close()
                    return {"stopped": True, "position": dict(position), "run_dir": str(run_dir)}
            bar.close()
            watch.check(epoch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds += time.perf_counter() - epoch_start

            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            position.update(epoch=epoch + 1, round=0, kd_in_round=0)
            if is_main:
                evaluation = engine.evaluate(student, test_batches, autocast_dtype,
                                             teacher=teacher if options["log_fidelity"] else None)
                is_best = evaluation["acc1"] > best_acc1
                best_acc1 = max(best_acc1, evaluation["acc1"])
                for key in ("agreement1", "prob_loyalty_ref", "prob_loyalty_js"):
                    if key in evaluation:
                        best_fidelity[key] = max(best_fidelity.get(key, float("-inf")), evaluation[key])
                record = {"epoch": epoch, **evaluation, "lr": lr, "best_acc1": best_acc1,
                          **{f"best_{k}": v for k, v in best_fidelity.items()},
                          **{name: float(sums[name]) / counts[name] for name in sums},
                          **{name: float(value) for name, value in schedule.items()},
                          "epoch_seconds": seconds, "images_per_second": images_seen * context.world_size / seconds}
                memory = engine.peak_memory_mb(device)
                if memory is not None:
                    record["peak_memory_mb"] = memory
                logger.log(record)
                preview = synthesizer.preview_images()
                if preview is not None:
                    logger.log_images("synthesized", preview, epoch)
                print(f"[Eval] Epoch={epoch} Acc@1={evaluation['acc1']:.2f} Acc@5={evaluation['acc5']:.2f} "
                      f"Loss={evaluation['loss']:.4f} Lr={lr:.4g} Best={best_acc1:.2f} ({seconds:.1f}s)")
                if is_best:
                    engine.save_classifier(run_dir / "best.pth", student, options["student"],
                                           options["num_classes"], options["dataset"], epoch=epoch,
                                           acc1=evaluation["acc1"], method=options["method"])
                save_last({})
            distributed.barrier(context)
    logger.close()
    return finish(run_dir, options, student, context, best_acc1)


def finish(run_dir: Path, options: dict[str, Any], student: nn.Module,
           context: distributed.DistributedContext, best_acc1: float) -> dict[str, Any]:
    """Print and store the end-of-run summary: best, last, mean of last 5, wall time, peak memory."""
    # One short write (below the pipe's atomic size) so lines of several ranks never interleave.
    sys.stdout.flush()
    sys.stdout.write(f"rank {context.rank} student fingerprint: {fingerprint(student)}\n")
    sys.stdout.flush()
    if not context.is_main:
        return {"stopped": False, "run_dir": str(run_dir)}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    accuracies = [r["acc1"] for r in records]
    memories = [r["peak_memory_mb"] for r in records if "peak_memory_mb" in r]
    summary = {"method": options["method"], "dataset": options["dataset"], "teacher": options["teacher"],
               "student": options["student"], "epochs": len(records), "best_acc1": best_acc1,
               "best_epoch": accuracies.index(max(accuracies)) if accuracies else None,
               "last_acc1": accuracies[-1] if accuracies else None,
               "mean_last5_acc1": sum(accuracies[-5:]) / len(accuracies[-5:]) if accuracies else None,
               "wall_seconds": sum(r["epoch_seconds"] for r in records),
               "peak_memory_mb": max(memories) if memories else None}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print("summary: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in summary.items()))
    print(f"run directory: {run_dir} (TensorBoard: tensorboard --logdir {run_dir})")
    return {"stopped": False, **summary, "run_dir": str(run_dir)}


if __name__ == "__main__":
    engine.run_cli(main)
