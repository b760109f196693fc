"""Supervised training of teachers and student-from-scratch baselines (METHODS.md §2.2, §20.1).

Reference recipe (all defaults, every part overridable): SGD lr 0.1, momentum 0.9, weight
decay 1e-4, MultiStepLR 120/150/180 x0.1 stepped per epoch, 200 epochs, batch 256, the
dataset's training augmentation (CIFAR: random crop with 4-px zero padding + horizontal flip),
cross-entropy. A dataset entry may replace parts of it (``DatasetInfo.scratch_defaults``): MNIST
trains as DAFL's teachers were, Adam lr 1e-3, no weight decay, no decay steps, 9 epochs, batch
256, no augmentation (§20.1); Tiny-ImageNet as the released 64-px teachers were, lr 0.2, batch
128 (§18.3). ImageNet is refused in one line: its teachers are torchvision's weights (§19.1).

The run directory holds config.yaml, metrics.jsonl, TensorBoard events, last.pth and best.pth.
A finished run copies its best weights to ``checkpoints/pretrained/<dataset>_<model>.pth``,
where ``datafree_kd.py`` looks for teachers by default.

Resumption is exact: the order of the training set in epoch e and the augmentation of step s
are drawn from generators seeded by (seed, e) and (seed, e, s), so a run stopped anywhere
(``--max_minutes``, SIGINT/SIGTERM, kill -9 after the first checkpoint, which is written before
the first step) and resumed with ``--resume`` reaches the same weights as an uninterrupted one.
The loop runs the ticks of an :class:`~datafree.run.plan.EpochPlan` (per epoch, its training steps,
then its end); the resumable position is one integer, the next tick. Resumption, stops, logging
and checkpoints are :class:`datafree.run.lifecycle.RunLifecycle`, shared with ``datafree_kd.py``.
"""
from __future__ import annotations

from datafree.run import signals  # no torch: catches SIGINT / SIGTERM while the rest imports

if __name__ == "__main__":
    signals.catch_early()

import argparse  # noqa: E402
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

import registry
from datafree.augment import random_crop_flip, to_unit_float
from datafree.run.checkpoints import write_error
from datafree.run.cli import ArgumentParser, add_common_arguments, resolved_config, run_cli
from datafree.data import DATASETS, DatasetError, download, evaluation_loader, load_split
from datafree.errors import UsageError
from datafree.run.evaluation import evaluate
from datafree.models import Normalizer
from datafree.run.numerics import Numerics, autocast, environment_info, resolve_device, to_memory_format
from datafree.options import Options, add_option_flags, option
from datafree.run.plan import TRAIN_STEP, EpochPlan, Tick
from datafree.run.lifecycle import EpochMeter, RunLifecycle
from datafree.run.seeding import derived_generator, seed_everything
from datafree.run.signals import StopRequest
from datafree.run.stopping import all_finite

#: The §2.2 recipe; a dataset's ``scratch_defaults`` override it for the flags left unset.
REFERENCE_RECIPE = {"optimizer": "sgd", "epochs": 200, "batch_size": 256, "lr": 0.1, "momentum": 0.9,
                    "weight_decay": 1e-4, "milestones": "120,150,180", "gamma": 0.1}


@dataclass(frozen=True)
class ScratchOptions(Options):
    """training recipe (§2.2; a dataset's published recipe replaces parts of it, §20.1)"""

    DEFAULTS = REFERENCE_RECIPE
    ROWS = {name: dict(info.scratch_defaults) for name, info in DATASETS.items()}

    optimizer: str = option("sgd", "sgd or adam (MNIST)", choices=("sgd", "adam"))
    epochs: int = option(200, "epochs", "positive")
    batch_size: int = option(256, "batch size", "positive")
    lr: float = option(0.1, "learning rate", "positive")
    momentum: float = option(0.9, "SGD momentum", "non_negative")
    weight_decay: float = option(1e-4, "weight decay", "non_negative")
    milestones: str = option("120,150,180", "epochs where lr is multiplied by --gamma ('' for none)")
    gamma: float = option(0.1, "learning-rate decay factor at each milestone", "positive")

    def derive(self) -> None:
        """Milestones as canonical comma-separated integers."""
        try:
            milestones = [int(m) for m in str(self.milestones).split(",") if m.strip()]
        except ValueError:
            raise UsageError(f"--milestones must be comma-separated integers, got '{self.milestones}'") from None
        self.set("milestones", ",".join(str(m) for m in milestones))


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Train a classifier from scratch (teacher or baseline). Unset values "
                                        "take the reference recipe (docs/METHODS.md §2.2; MNIST §20.1).")
    parser.add_argument("--model", required=True, help=f"one of: {' '.join(registry.CLASSIFIERS)}")
    add_option_flags(parser, {"train_scratch": ScratchOptions})
    parser.add_argument("--pretrained_path", default=None,
                        help="where the finished teacher is copied (default checkpoints/pretrained/<dataset>_<model>.pth)")
    add_common_arguments(parser)
    return parser


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Validate every argument and fill the defaults that depend on others (before anything is created)."""
    info = registry.get_dataset(args.dataset)
    if info.scratch_refusal:
        raise UsageError(f"--dataset {args.dataset}: {info.scratch_refusal}; pass the teacher's weights to "
                         "datafree_kd.py with --teacher_ckpt")
    registry.lookup(registry.CLASSIFIERS, args.model, "model")
    recipe = ScratchOptions.resolve({name: getattr(args, name) for name in ScratchOptions.flag_names()},
                                    dataset=args.dataset, num_classes=info.num_classes)
    for key, value in recipe.as_config().items():
        setattr(args, key, value)
    if args.save_dir is None:
        args.save_dir = f"runs/scratch/{args.dataset}_{args.model}_seed{args.seed}"
    if args.pretrained_path is None:
        args.pretrained_path = f"checkpoints/pretrained/{args.dataset}_{args.model}.pth"
    pretrained = Path(args.pretrained_path)
    if pretrained.is_dir() or any(parent.exists() and not parent.is_dir() for parent in pretrained.parents):
        raise UsageError(f"--pretrained_path {pretrained} must be a file path (it is a directory or lies under a "
                         "file); pass e.g. checkpoints/pretrained/<dataset>_<model>.pth")
    return resolved_config(args)


def load_data(options: dict[str, Any], device: torch.device):
    """The training split as uint8 tensors on ``device`` and the test split on the CPU, for
    :func:`~datafree.data.evaluation_loader` to place (§2.1, §18.1, §20); downloads when asked."""
    if options["download"]:
        download(options["data_root"], options["dataset"], progress=options["progress"])
    splits = [load_split(options["data_root"], options["dataset"], split, cache_dir=options["cache_dir"],
                         progress=options["progress"]) for split in ("train", "test")]
    for split, (images, _) in zip(("train", "test"), splits):
        if images.shape[0] == 0:
            raise DatasetError(f"{options['dataset']}: the {split} split under {options['data_root']} holds no image")
    (train_images, train_labels), (test_images, test_labels) = splits
    return train_images.to(device), train_labels.to(device), test_images, test_labels


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = resolve_options(build_parser().parse_args(argv))
    if options["num_threads"]:
        torch.set_num_threads(options["num_threads"])
    with StopRequest() as stop:  # from here on, SIGINT / SIGTERM stop cleanly, set-up included
        return train(options, resolve_device(options["device"]), stop)


def train(options: dict[str, Any], device: torch.device, stop: StopRequest) -> dict[str, Any]:
    """Validate inputs, open the run, build the model, run the plan's ticks, publish the teacher."""
    numerics = Numerics.from_options(options, device)  # before any CUDA kernel runs
    info = registry.get_dataset(options["dataset"])
    train_images, train_labels, test_images, test_labels = load_data(options, device)
    identity = {"arch": options["model"], "num_classes": info.num_classes, "dataset": options["dataset"]}
    run = RunLifecycle(options, "scratch_run", identity, device, stop)
    run.open({**options, "environment": environment_info(device)})
    print(f"config: {options}")
    seed_everything(options["seed"])
    model = to_memory_format(registry.get_model(options["model"], info.num_classes, info.channels).to(device),
                             numerics.channels_last)
    if options["optimizer"] == "adam":   # DAFL's MNIST teachers (§20.1)
        optimizer = torch.optim.Adam(model.parameters(), lr=options["lr"], weight_decay=options["weight_decay"],
                                     foreach=True)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=options["lr"], momentum=options["momentum"],
                                    weight_decay=options["weight_decay"], foreach=True)
    milestones = [int(m) for m in options["milestones"].split(",") if m]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=options["gamma"])
    scaler = torch.amp.GradScaler(device.type, enabled=numerics.autocast_dtype == torch.float16)
    states = {"state_dict": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    plan = EpochPlan(options["epochs"], math.ceil(train_images.shape[0] / options["batch_size"]))
    run.attach(states, model, plan)
    if stop.requested:  # a signal during set-up: stop at once, resumable from the first last.pth
        return run.interrupt(None)
    test_batches = evaluation_loader(info, test_images, test_labels, options["batch_size"], device,
                                     numerics.channels_last, True if options["test_on_device"] else None)
    normalizer = Normalizer(info.mean, info.std).to(device)
    meter = None
    for tick in range(run.tick, len(plan)):
        step = plan[tick]
        if meter is None:   # the first tick of an epoch, or of a resumed run
            meter = run.begin_epoch()
            model.train()
            order = epoch_order(options["seed"], step.epoch, train_images.shape[0], device)
        if step.kind == TRAIN_STEP:
            train_step(options, model, (train_images, train_labels), order, step, normalizer, states, run, meter,
                       numerics)
        else:   # the end of the epoch: learning-rate step, evaluation, logging, checkpoints
            run.check_losses(step.epoch)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            record = run.end_epoch(step.epoch, meter, {"lr": lr}, lambda: evaluate(model, test_batches))
            print(f"  train loss {record['train_loss']:.3f}, {record['images_per_second']:.0f} img/s")
            meter = None
        if run.stop_after(tick):   # the tick's one stop check
            return run.interrupt(meter)
    result = run.finish({"model": options["model"], "dataset": options["dataset"]})
    publish_teacher(run, Path(options["pretrained_path"]))
    return result


def epoch_order(seed: int, epoch: int, count: int, device: torch.device) -> torch.Tensor:
    """The order of the training set in ``epoch``: a permutation drawn from a generator seeded by
    (seed, epoch), so that a resumed run visits the same batches."""
    return torch.randperm(count, generator=derived_generator(torch.device("cpu"), seed, epoch)).to(device)


def train_step(options: dict[str, Any], model: nn.Module, data: tuple[torch.Tensor, torch.Tensor],
               order: torch.Tensor, step: Tick, normalizer: nn.Module, states: dict[str, Any], run: RunLifecycle,
               meter: EpochMeter, numerics: Numerics) -> None:
    """One supervised step: the ``step.step``-th batch of the epoch's ``order``, augmented by a
    generator of (seed, epoch, step), cross-entropy, optimizer step (skipped on a non-finite loss
    under ``--nan_policy skip``)."""
    images_all, labels_all = data
    info = registry.get_dataset(options["dataset"])
    device, batch_size = numerics.device, options["batch_size"]
    optimizer, scaler = states["optimizer"], states["scaler"]
    indices = order[step.step * batch_size:(step.step + 1) * batch_size]
    images = images_all[indices]
    if info.train_augmentation:   # the dataset's training augmentation (§2.1; none for digits, §20.1)
        generator = derived_generator(device, options["seed"], step.epoch, step.step)
        images = random_crop_flip(images, padding=info.train_padding, flip_prob=0.5 if info.train_flip else 0.0,
                                  generator=generator)
    images = normalizer(to_unit_float(images))
    if numerics.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = labels_all[indices]
    with autocast(device, numerics.autocast_dtype):
        logits = model(images)
    loss = F.cross_entropy(logits.float(), labels)
    if options["nan_policy"] != "skip" or all_finite(iter([loss])):
        run.observe(step.step, {"cross_entropy": loss})
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        accuracy = 100.0 * (logits.detach().argmax(1) == labels).float().mean()
        meter.add({"train_loss": loss, "train_acc1": accuracy}, weight=labels.shape[0])
        meter.images += labels.shape[0]
    if (step.step + 1) % options["log_interval"] == 0:
        run.check_losses(step.epoch)


def publish_teacher(run: RunLifecycle, pretrained: Path) -> None:
    """Copy the best weights to ``pretrained`` (atomically), where datafree_kd.py looks for teachers."""
    best = run.run_dir / "best.pth"
    if not best.exists():
        return
    temporary = pretrained.with_name(pretrained.name + ".tmp")
    try:
        pretrained.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, temporary)
        temporary.replace(pretrained)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise write_error(pretrained, error, kept=pretrained.exists()) from None
    print(f"Best Acc@1={run.best_acc1:.2f}; teacher saved to {pretrained}")


if __name__ == "__main__":
    run_cli(main)
