"""Data-free knowledge distillation: ``python datafree_kd.py --method cudfkd ...`` (METHODS.md §3.4).

One method-agnostic loop; everything method-specific is behind the Synthesizer interface
(``datafree/synthesis/base.py``). Per-method defaults (§4.7, §5.8, §10.8, §11.8, §12.6; per
dataset where the published settings differ) fill every flag left unset; the resolved values
are printed at start and written to ``config.yaml``.

Real data is read only through the **test** split, for evaluation (§2.1): the training split
is never opened. Multi-GPU / multi-node: launch with ``torchrun``; ``--batch_size`` and
``--synthesis_batch_size`` are the global batches, split across the ranks.

The loop (:func:`train`) runs the ticks of a :class:`~datafree.run.plan.DistillationPlan` top to
bottom: per epoch, for each round one ``synthesize()`` tick then ``kd_steps`` KD-step ticks (the
first ``--warmup`` epochs synthesise only), then the end-of-epoch tick (cosine step, evaluation,
logging, checkpoints). The resumable position is one integer, the next tick. Resumption, stops,
the NaN watch, logging and checkpoints are :class:`datafree.run.lifecycle.RunLifecycle`, shared with
``train_scratch.py``.
"""
from __future__ import annotations

from datafree.run import signals  # no torch: catches SIGINT / SIGTERM while the rest imports

if __name__ == "__main__":
    signals.catch_early()

import argparse  # noqa: E402
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import registry
from datafree.run import distributed
from datafree.digests import file_sha256
from datafree.errors import first_line
from datafree.run.checkpoints import load_classifier
from datafree.run.cli import ArgumentParser, add_common_arguments, resolved_config, run_cli
from datafree.data import DatasetError, TensorLoader, download, evaluation_loader, load_split
from datafree.errors import CheckpointError, UsageError
from datafree.run.evaluation import evaluate
from datafree.synthesis.hooks import freeze
from datafree.models import Normalizer
from datafree.run.numerics import (Numerics, autocast, environment_info, maybe_compile, memory_bytes, resolve_device,
                               to_memory_format, unwrap)
from datafree.options import add_option_flags, option_readers, refuse_foreign_flags
from datafree.schedules import multistep_factor, parse_milestones
from datafree.run.plan import KD_STEP, SYNTHESIS, DistillationPlan
from datafree.run.lifecycle import RunLifecycle
from datafree.run.seeding import seed_everything
from datafree.run.signals import StopRequest
from datafree.run.stopping import all_finite
from datafree.synthesis.base import SynthesisSetup, Synthesizer
from datafree.synthesis.budget import POOL_DEVICE_MODES, plan_memory



def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Data-free knowledge distillation. Unset hyperparameters take the method's "
                    "published defaults (docs/METHODS.md §4.7, §5.8, §10.8, §11.8, §12.6), printed per method "
                    "in brackets below; a flag that the chosen method does not read is refused.")
    parser.add_argument("--method", required=True, help="one of: " + ", ".join(
        name + (f" ({method.recipe.caveat}, {method.recipe.section})" if method.recipe and method.recipe.caveat else "")
        for name, method in registry.METHODS.items()))
    parser.add_argument("--teacher", required=True, help="teacher architecture, e.g. wrn40_2")
    parser.add_argument("--student", required=True, help="student architecture, e.g. wrn16_1")
    parser.add_argument("--teacher_ckpt", default=None,
                        help="teacher checkpoint (default checkpoints/pretrained/<dataset>_<teacher>.pth)")
    add_option_flags(parser, registry.method_options())
    parser.add_argument("--log_fidelity", action="store_true",
                        help="log Agreement@1 and probability loyalty on the test set (§6.3)")
    parser.add_argument("--log_tag", default="",
                        help="suffix of the default run directory name; launchers use it to name variants")
    parser.add_argument("--pool_device", default="auto", choices=POOL_DEVICE_MODES,
                        help="where a method's image pool lives (§21.3): the run's device, host memory (batches "
                             "copied to the device one at a time; same results), or auto: the device while the "
                             "stores' final size fits a quarter of its free memory, else the host")
    add_common_arguments(parser)
    return parser


def resolve_options(args: argparse.Namespace, world_size: int | None = None) -> dict[str, Any]:
    """The resolved configuration (``config.yaml``): the run's flags and the method's typed options.

    Everything is checked here, before anything is created: names, numbers, sizes, and that the
    global batches divide across ``world_size`` ranks (default: torchrun's WORLD_SIZE).
    """
    registry.lookup(registry.CLASSIFIERS, args.teacher, "model")
    registry.lookup(registry.CLASSIFIERS, args.student, "model")
    method = registry.get_method(args.method)
    info = registry.get_dataset(args.dataset)
    # The method's typed options: the flags given over its published defaults for the dataset; a given
    # flag that the method does not read is refused in one line (it would be silently ignored).
    table = registry.method_options()
    readers = option_readers(table)
    given = {name: getattr(args, name) for name in readers if getattr(args, name) is not None}
    refuse_foreign_flags(given, args.method, table)
    typed = method.Options.resolve(given, dataset=args.dataset, num_classes=info.num_classes)
    options = {key: value for key, value in resolved_config(args).items() if key not in readers}
    options.update(typed.as_config())
    options["num_classes"] = typed.num_classes
    world_size = world_size or distributed.world_size_from_environment()
    for key in ("batch_size", "synthesis_batch_size"):
        if options[key] % world_size:
            raise UsageError(f"--{key} {options[key]} is the global batch and must divide across the "
                             f"{world_size} ranks; pass a multiple of {world_size}")
    if options["teacher_ckpt"] is None:
        options["teacher_ckpt"] = f"checkpoints/pretrained/{args.dataset}_{args.teacher}.pth"
    if options["save_dir"] is None:
        tag = f"_{args.log_tag}" if args.log_tag else ""
        options["save_dir"] = (f"runs/{args.method}/{args.dataset}_{args.teacher}_{args.student}"
                               f"{tag}_seed{args.seed}")
    return options


def method_options(options: dict[str, Any]) -> Any:
    """The typed options of the configuration's method (rebuilt from ``config``; see :mod:`datafree.options`)."""
    return registry.get_method(options["method"]).Options.from_config(options)


def check_memory(options: dict[str, Any], device: torch.device, world_size: int) -> None:
    """Refuse batches that cannot fit: one fp32 image batch of a rank alone must fit the device. The
    image is the dataset's real ``channels × size × size`` (§21.3)."""
    available = memory_bytes(device)
    largest = max(options["batch_size"], options["synthesis_batch_size"]) // world_size
    channels, height, width = registry.get_dataset(options["dataset"]).image_shape
    needed = largest * channels * height * width * 4
    if available is not None and needed > available:
        raise UsageError(f"a batch of {largest} images needs {needed / 2**30:.3g} GiB for its pixels alone but "
                         f"{device} has {available / 2**30:.3g} GiB; lower --batch_size / --synthesis_batch_size")


def load_teacher(options: dict[str, Any], device: torch.device, channels_last: bool) -> nn.Module:
    """Build, load and freeze the teacher; a missing / wrong checkpoint is a one-line error."""
    path = Path(options["teacher_ckpt"])
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}; train one with "
                              f"`python train_scratch.py --model {options['teacher']} --dataset {options['dataset']}`, "
                              "put a released teacher there, or pass --teacher_ckpt")
    teacher = registry.get_model(options["teacher"], options["num_classes"],
                                 registry.get_dataset(options["dataset"]).channels)
    check_batchnorm_terms(options, teacher)
    load_classifier(path, teacher, options["teacher"], options["num_classes"], options["dataset"])
    return to_memory_format(freeze(teacher.to(device)), channels_last)


def check_batchnorm_terms(options: dict[str, Any], teacher: nn.Module) -> None:
    """Refuse, in one line, a method whose prior reads the teacher's BN layers when it has none (§20).

    LeNet-5 and HintonNet have no BatchNorm layer: the BN-statistics loss would be a silent zero.
    The line names the flags that switch the terms off, or says that the method cannot run at all.
    """
    if any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in teacher.modules()):
        return
    method = registry.get_method(options["method"])
    name, teacher_name = options["method"], options["teacher"]
    if method.requires_batchnorm:
        raise UsageError(f"--method {name} cannot run on teacher {teacher_name}: {method.requires_batchnorm}, and "
                         f"{teacher_name} has no BatchNorm layer; use a teacher with BN layers or a method without "
                         "a BN prior (dafl, zskt)")
    terms = method.batchnorm_terms(method_options(options))
    if terms:
        flags = " ".join(f"--{flag} 0" for flag in terms)
        raise UsageError(f"teacher {teacher_name} has no BatchNorm layer, so the BN-statistics prior of --method "
                         f"{name} ({', '.join(f'--{flag} {options[flag]}' for flag in terms)}) would be a silent "
                         f"zero; pass {flags} to run {name} without it")


def load_test_batches(options: dict[str, Any], numerics: Numerics) -> TensorLoader:
    """The test split (data-free: the only real data ever read, §2.1), on the device, or in host
    memory one batch at a time where the dataset entry says so (ImageNet, §19.1) and
    ``--test_on_device`` does not override it."""
    info = registry.get_dataset(options["dataset"])
    if options["download"]:
        download(options["data_root"], options["dataset"], progress=options.get("progress", True))
    images, labels = load_split(options["data_root"], options["dataset"], "test", cache_dir=options.get("cache_dir"),
                                progress=options.get("progress", True))
    if images.shape[0] == 0:
        raise DatasetError(f"{options['dataset']}: the test split under {options['data_root']} holds no image")
    return evaluation_loader(info, images, labels, options["batch_size"], numerics.device, numerics.channels_last,
                             test_on_device=True if options.get("test_on_device") else None)


def fingerprint(module: nn.Module) -> str:
    """A short checksum of a module's weights (to compare ranks or runs by eye)."""
    total = sum(float(p.detach().double().abs().sum()) for p in unwrap(module).parameters())
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

    def states(self) -> dict[str, Any]:
        """What ``last.pth`` holds, by checkpoint entry."""
        return {"state_dict": self.student, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "scaler": self.scaler, "synthesizer": self.synthesizer}


def build_training(options: dict[str, Any], teacher: nn.Module, context: distributed.DistributedContext,
                   numerics: Numerics) -> TrainingParts:
    """Build student, synthesizer and optimisation for a resolved configuration.

    Each rank synthesises and distils its share of the global batches. The cosine schedule runs
    over the KD epochs (``epochs − warmup``) down to ``eta_min`` (§3.3, §10.7); ``--lr_schedule
    constant`` keeps ``--lr`` (DAFL on MNIST, §20.1). The dataset entry gives the synthesizers
    their image geometry and pool augmentation (§20); their stores are sized and placed (device or
    host, ``--pool_device``) and reported in one line (§21.3).
    """
    device, world = numerics.device, context.world_size
    info = registry.get_dataset(options["dataset"])
    student = to_memory_format(registry.get_model(options["student"], options["num_classes"], info.channels).to(device),
                               numerics.channels_last)
    setup = SynthesisSetup(teacher=teacher, student=student, normalizer=Normalizer(info.mean, info.std).to(device),
                           num_classes=options["num_classes"], dataset=options["dataset"],
                           teacher_name=options["teacher"], batch_size=options["batch_size"] // world,
                           synthesis_batch_size=options["synthesis_batch_size"] // world, epochs=options["epochs"],
                           device=device, autocast_dtype=numerics.autocast_dtype,
                           channels_last=numerics.channels_last, seed=options["seed"], image_size=info.image_size,
                           rank=context.rank, world_size=world, channels=info.channels,
                           pool_padding=info.pool_padding, pool_flip=info.pool_flip)
    synthesizer = registry.get_method(options["method"])(setup, method_options(options))
    memory = plan_memory(synthesizer, options["pool_device"])   # before the first synthesis (§21.3)
    if memory and context.is_main:
        print(memory, flush=True)
    if context.enabled:
        synthesizer.distribute(lambda module: distributed.wrap(module, context, device))
    trained_student = distributed.wrap(maybe_compile(student, options["compile"]), context, device)
    parameters = [*student.parameters(), *synthesizer.student_extra_parameters()]
    if options["optimizer"] == "adam":   # DAFL's MNIST row (§20.1): Adam, default betas
        optimizer = torch.optim.Adam(parameters, lr=options["lr"], weight_decay=options["weight_decay"], foreach=True)
    else:
        optimizer = torch.optim.SGD(parameters, lr=options["lr"], momentum=options["momentum"],
                                    weight_decay=options["weight_decay"], foreach=True)
    if options["lr_schedule"] == "constant":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    elif options["lr_schedule"] == "multistep":   # DFAD's schedule (§14.5)
        milestones, gamma = parse_milestones(options["milestones"]), options["gamma"]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                      lambda epoch: multistep_factor(epoch, milestones, gamma))
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=options["epochs"] - options["warmup"], eta_min=options["eta_min"])
    scaler = torch.amp.GradScaler(device.type, enabled=numerics.autocast_dtype == torch.float16)
    return TrainingParts(student, trained_student, synthesizer, optimizer, scheduler, scaler)


def build_parts(options: dict[str, Any], teacher: nn.Module, context: distributed.DistributedContext,
                numerics: Numerics) -> TrainingParts:
    """:func:`build_training`, with an allocation failure turned into one line that names its cause:
    the sizes in the command, not the batch alone (e.g. NAYER's ``--le_hidden``); nothing exists yet."""
    try:
        return build_training(options, teacher, context, numerics)
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and not isinstance(error, torch.OutOfMemoryError) \
                and "can't allocate memory" not in str(error) and "out of memory" not in str(error):
            raise
        raise UsageError(f"out of memory while building the student and the {options['method']} synthesizer "
                         f"({first_line(error, limit=100)}); nothing was created: lower the sizes in the command "
                         "(--batch_size, --synthesis_batch_size, --nz, --ngf or the method's own, such as "
                         "--le_hidden, --bank_size, --queue_size)") from None


def student_step(synthesizer: Synthesizer, teacher: nn.Module, trained_student: nn.Module,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 autocast_dtype: torch.dtype | None, kd_step: int, skip_nonfinite: bool = False,
                 ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor], int]:
    """One KD step (§3.4): sample, teacher forward (no grad), student forward/backward, SGD step.

    A method with ``needs_features`` also gets the penultimate features of both networks (§12.9).
    Returns the loss (None when ``skip_nonfinite`` skipped a NaN/inf batch), the method's extra
    terms and the batch size: the rows ``sample()`` returned, which may exceed B. No host
    synchronisation unless ``skip_nonfinite``.
    """
    images = synthesizer.sample()
    features = None
    with torch.no_grad(), autocast(images.device, autocast_dtype):
        teacher_output = teacher(images, return_features=synthesizer.needs_features)
    with autocast(images.device, autocast_dtype):
        if synthesizer.needs_features:
            (student_logits, student_features) = trained_student(images, return_features=True)
            teacher_logits, teacher_features = teacher_output
            features = (student_features.float(), teacher_features.float())
        else:
            student_logits, teacher_logits = trained_student(images), teacher_output
    loss, terms = synthesizer.student_loss(student_logits.float(), teacher_logits.float(), kd_step, features)
    if skip_nonfinite and not all_finite(iter([loss])):
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
    with StopRequest() as stop:  # from here on, SIGINT / SIGTERM stop cleanly, set-up included
        context, device_name = distributed.init_from_environment(options["device"])
        try:
            return distill(options, context, resolve_device(device_name), stop)
        finally:
            distributed.shutdown(context)


def distill(options: dict[str, Any], context: distributed.DistributedContext, device: torch.device,
            stop: StopRequest) -> dict[str, Any]:
    """Validate the inputs, open the run, build the parts, train, and summarise."""
    numerics = Numerics.from_options(options, device)  # before any CUDA kernel runs
    check_memory(options, device, context.world_size)
    # Inputs are validated (teacher, data, run directory) before anything is created.
    teacher = load_teacher(options, device, numerics.channels_last)
    test_batches = load_test_batches(options, numerics) if context.is_main else None
    identity = {"arch": options["student"], "num_classes": options["num_classes"], "dataset": options["dataset"],
                "method": options["method"]}
    if context.is_main:
        print("resolved configuration:\n" + "\n".join(f"  {k}: {v}" for k, v in options.items()))
        for note in registry.get_method(options["method"]).deviations(method_options(options)):
            print(f"deviation from the paper: {note}")
    seed_everything(options["seed"])
    parts = build_parts(options, teacher, context, numerics)   # before the run directory is created
    run = RunLifecycle(options, "distillation_run", identity, device, stop, context,
                       protected=(options["teacher_ckpt"],))
    run.open({**options, "teacher_sha256": file_sha256(Path(options["teacher_ckpt"])),
              "world_size": context.world_size, "batch_size_per_rank": options["batch_size"] // context.world_size,
              "synthesis_batch_size_per_rank": options["synthesis_batch_size"] // context.world_size,
              "environment": environment_info(device)})
    run.attach(parts.states(), parts.student, DistillationPlan(options["epochs"], options["warmup"],
                                                               options["ep_steps"], options["kd_steps"]))
    if stop.requested:  # a signal during set-up: stop at once, resumable from the first last.pth
        return run.interrupt(None)
    stopped = train(options, parts, teacher, run, test_batches, numerics)
    if stopped is not None:
        return stopped
    print(f"rank {context.rank} student fingerprint: {fingerprint(parts.student)}", flush=True)
    return run.finish({"method": options["method"], "dataset": options["dataset"], "teacher": options["teacher"],
                       "student": options["student"]})


def train(options: dict[str, Any], parts: TrainingParts, teacher: nn.Module, run: RunLifecycle,
          test_batches: TensorLoader | None, numerics: Numerics) -> dict[str, Any] | None:
    """The loop of §3.4, one tick of ``run.plan`` at a time from ``run.tick`` (a resumed run may
    start mid-round): a synthesis round, a KD step, or the end of an epoch.

    Returns None when every tick ran, or the stop result when the run was interrupted.
    """
    plan, synthesizer, meter = run.plan, parts.synthesizer, None
    skip_nonfinite = options["nan_policy"] == "skip"
    for tick in range(run.tick, len(plan)):
        step = plan[tick]
        if meter is None:   # the first tick of an epoch, or of a resumed run
            schedule = synthesizer.begin_epoch(step.epoch)
            meter = run.begin_epoch()
            parts.student.train()
        if step.kind == SYNTHESIS:   # the images of this round's KD steps
            terms = meter.time_synthesis(synthesizer.synthesize)
            run.observe(step.kd_step, terms)
            meter.add(terms)
        elif step.kind == KD_STEP:
            loss, terms, batch = student_step(synthesizer, teacher, parts.trained_student, parts.optimizer,
                                              parts.scaler, numerics.autocast_dtype, step.kd_step, skip_nonfinite)
            if loss is not None:
                run.observe(step.kd_step, {"loss_student": loss})
                meter.add({"loss_student": loss, **terms})
            synthesizer.after_student_step(step.kd_step)   # method-agnostic hook
            meter.images += batch
            if (step.kd_step + 1) % options["log_interval"] == 0:
                run.check_losses(step.epoch)
        else:   # the end of the epoch; a warm-up epoch (§10.7, §11.7) has no LR step and no evaluation
            run.check_losses(step.epoch)
            lr = parts.optimizer.param_groups[0]["lr"]
            if step.distilling:
                parts.scheduler.step()
            fidelity_teacher = teacher if options["log_fidelity"] else None
            evaluation = (lambda: evaluate(parts.student, test_batches, fidelity_teacher)) if step.distilling else None
            preview = synthesizer.preview_images() if run.is_main else None
            run.end_epoch(step.epoch, meter, {"lr": lr, **schedule}, evaluation, preview)
            meter = None
        if run.stop_after(tick):   # the tick's one stop check
            return run.interrupt(meter)
    return None


if __name__ == "__main__":
    run_cli(main)
