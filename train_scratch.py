"""Supervised training of teachers and student-from-scratch baselines (METHODS.md §2.2).

Reference recipe (all defaults, every part overridable): SGD lr 0.1, momentum 0.9, weight
decay 1e-4, MultiStepLR 120/150/180 x0.1 stepped per epoch, 200 epochs, batch 256,
random crop (4-px zero padding) + horizontal flip, cross-entropy.

The run directory holds config.yaml, metrics.jsonl, TensorBoard events, last.pth and best.pth.
A finished run copies its best weights to ``checkpoints/pretrained/<dataset>_<model>.pth``,
where ``datafree_kd.py`` looks for teachers by default.

Resumption is exact: the order of the training set in epoch e and the augmentation of step s
are drawn from generators seeded by (seed, e) and (seed, e, s), so a run stopped anywhere
(``--max_minutes``, SIGINT/SIGTERM, kill -9 after the last checkpoint) and resumed with
``--resume`` reaches the same weights as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

import registry
from datafree import engine
from datafree.augment import random_crop_flip, to_unit_float
from datafree.cli import add_common_arguments, check_resume_config, resolved_config, resume_hint
from datafree.data import TensorLoader, download, load_split
from datafree.errors import UsageError
from datafree.models import Normalizer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train a CIFAR classifier from scratch (teacher or baseline).")
    parser.add_argument("--model", required=True, help="resnet18 resnet34 vgg11 wrn16_1 wrn16_2 wrn40_1 wrn40_2")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight_decay", type=float, default=1e-4)
    parser.add_argument("--milestones", default="120,150,180", help="epochs where lr is multiplied by --gamma")
    parser.add_argument("--gamma", type=float, default=0.1)
    parser.add_argument("--pretrained_path", default=None,
                        help="where the finished teacher is copied (default checkpoints/pretrained/<dataset>_<model>.pth)")
    add_common_arguments(parser)
    return parser


def resolve_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """Validate and fill defaults that depend on other arguments."""
    registry.get_dataset(args.dataset)
    registry.lookup(registry.CLASSIFIERS, args.model, "model")
    engine.require_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            log_interval=args.log_interval)
    try:
        milestones = [int(m) for m in str(args.milestones).split(",") if m.strip()]
    except ValueError as error:
        raise UsageError(f"--milestones must be comma-separated integers, got '{args.milestones}'") from error
    args.milestones = ",".join(str(m) for m in milestones)
    if args.save_dir is None:
        args.save_dir = f"runs/scratch/{args.dataset}_{args.model}_seed{args.seed}"
    if args.pretrained_path is None:
        args.pretrained_path = f"checkpoints/pretrained/{args.dataset}_{args.model}.pth"
    return args


def load_data(args: argparse.Namespace, device: torch.device):
    """Both CIFAR splits as uint8 tensors on ``device`` (§2.1); downloads when asked."""
    if args.download:
        download(args.data_root, args.dataset)
    train_images, train_labels = load_split(args.data_root, args.dataset, "train")
    test_images, test_labels = load_split(args.data_root, args.dataset, "test")
    return (train_images.to(device), train_labels.to(device), test_images.to(device), test_labels.to(device))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = resolve_arguments(build_parser().parse_args(argv))
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    device = engine.resolve_device(args.device)
    autocast_dtype = engine.resolve_precision(args.precision, device)
    channels_last = args.channels_last == "on" or (args.channels_last == "auto" and device.type == "cuda")
    engine.configure_backends(device, args.deterministic)  # before any CUDA kernel runs
    info = registry.get_dataset(args.dataset)
    config = resolved_config(args)

    train_images, train_labels, test_images, test_labels = load_data(args, device)
    run_dir = engine.prepare_run_directory(args.save_dir, args.resume, args.overwrite)
    checkpoint = None
    if args.resume:
        checkpoint = engine.load_checkpoint(run_dir / "last.pth")
        check_resume_config(checkpoint["config"], config)
    engine.seed_everything(args.seed)
    model = engine.to_memory_format(registry.get_model(args.model, info.num_classes).to(device), channels_last)
    normalizer = Normalizer(info.mean, info.std).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay, foreach=True)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[int(m) for m in args.milestones.split(",") if m], gamma=args.gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)

    start_epoch, start_step, best_acc1 = 0, 0, 0.0
    partial: dict[str, float] = {}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        engine.restore_rng_state(checkpoint["rng"])
        start_epoch, start_step = checkpoint["epoch"], checkpoint["step_in_epoch"]
        best_acc1, partial = checkpoint["best_acc1"], checkpoint["partial_epoch"]
        print(f"resuming {run_dir} at epoch {start_epoch}, step {start_step}")
    else:
        engine.write_config(run_dir, {**config, "environment": engine.environment_info(device)})
    print(f"config: {config}")

    logger = engine.MetricsLogger(run_dir, start_epoch)
    budget = engine.TimeBudget(args.max_minutes)
    watch = engine.LossWatch(device)
    steps_per_epoch = math.ceil(train_images.shape[0] / args.batch_size)
    test_batches = TensorLoader(test_images, test_labels, batch_size=args.batch_size, shuffle=False,
                                augment=False, mean=info.mean, std=info.std, channels_last=channels_last)

    def save_last(epoch: int, step: int, sums: dict[str, float]) -> None:
        engine.atomic_save({
            "format": engine.CHECKPOINT_FORMAT, "kind": "scratch_run", "arch": args.model,
            "num_classes": info.num_classes, "dataset": args.dataset,
            "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "step_in_epoch": step, "best_acc1": best_acc1, "partial_epoch": sums,
            "rng": engine.capture_rng_state(), "config": config}, run_dir / "last.pth")

    wall_start = time.time()
    record: dict[str, Any] = {}
    with engine.StopRequest() as stop:
        for epoch in range(start_epoch, args.epochs):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            order = torch.randperm(train_images.shape[0],
                                   generator=engine.derived_generator(torch.device("cpu"), args.seed, epoch))
            order = order.to(device)
            sums = partial or {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
            partial = {}
            loss_sum = torch.tensor(sums["loss"], device=device)
            correct = torch.tensor(sums["correct"], device=device)
            seen, seconds = sums["seen"], sums["seconds"]
            watch.reset()
            model.train()
            first = start_step if epoch == start_epoch else 0
            bar = tqdm(range(first, steps_per_epoch), desc=f"epoch {epoch}", leave=False,
                       disable=not args.progress, initial=first, total=steps_per_epoch)
            step_start = time.perf_counter()
            for step in bar:
                indices = order[step * args.batch_size:(step + 1) * args.batch_size]
                generator = engine.derived_generator(device, args.seed, epoch, step)
                images = random_crop_flip(train_images[indices], padding=4, generator=generator)
                images = normalizer(to_unit_float(images))
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                labels = train_labels[indices]
                with engine.autocast(device, autocast_dtype):
                    logits = model(images)
                loss = F.cross_entropy(logits.float(), labels)
                skip = args.nan_policy == "skip" and not engine.all_finite(iter([loss]))
                if not skip:
                    watch.observe(step, {"cross_entropy": loss})
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    loss_sum += loss.detach() * labels.shape[0]
                    correct += (logits.detach().argmax(1) == labels).sum()
                    seen += labels.shape[0]
                if (step + 1) % args.log_interval == 0:
                    watch.check(epoch)
                    bar.set_postfix(loss=f"{loss_sum.item() / max(seen, 1):.3f}")
                if stop.requested or budget.exhausted():
                    watch.check(epoch)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    seconds += time.perf_counter() - step_start
                    save_last(epoch, step + 1, {"loss": loss_sum.item(), "correct": correct.item(),
                                                "seen": seen, "seconds": seconds})
                    reason = stop.signal_name or f"--max_minutes {args.max_minutes}"
                    print(f"stopped by {reason} at epoch {epoch}, step {step + 1}; "
                          f"checkpoint {run_dir / 'last.pth'}; continue with: {resume_hint()}")
                    logger.close()
                    return {"stopped": True, "epoch": epoch, "step": step + 1, "run_dir": str(run_dir)}
            watch.check(epoch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds += time.perf_counter() - step_start

            evaluation = engine.evaluate(model, test_batches, autocast_dtype)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            is_best = evaluation["acc1"] > best_acc1
            best_acc1 = max(best_acc1, evaluation["acc1"])
            record = {"epoch": epoch, "train_loss": loss_sum.item() / max(seen, 1),
                      "train_acc1": 100.0 * correct.item() / max(seen, 1), **evaluation, "lr": lr,
                      "best_acc1": best_acc1, "epoch_seconds": seconds,
                      "images_per_second": seen / max(seconds, 1e-9)}
            memory = engine.peak_memory_mb(device)
            if memory is not None:
                record["peak_memory_mb"] = memory
            logger.log(record)
            print(f"[Eval] Epoch={epoch} Acc@1={evaluation['acc1']:.2f} Acc@5={evaluation['acc5']:.2f} "
                  f"Loss={evaluation['loss']:.4f} Lr={lr:.4g} Best={best_acc1:.2f} "
                  f"({seconds:.1f}s, {record['images_per_second']:.0f} img/s)")
            if is_best:
                engine.save_classifier(run_dir / "best.pth", model, args.model, info.num_classes,
                                       args.dataset, epoch=epoch, acc1=evaluation["acc1"])
            save_last(epoch + 1, 0, {})
    logger.close()
    summary = {"best_acc1": best_acc1, "last_acc1": record.get("acc1"),
               "wall_seconds_this_session": time.time() - wall_start}
    pretrained = Path(args.pretrained_path)
    pretrained.parent.mkdir(parents=True, exist_ok=True)
    if (run_dir / "best.pth").exists():
        temporary = pretrained.with_name(pretrained.name + ".tmp")
        shutil.copyfile(run_dir / "best.pth", temporary)
        temporary.replace(pretrained)
        print(f"Best Acc@1={best_acc1:.2f}; teacher saved to {pretrained}")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return {"stopped": False, **summary, "run_dir": str(run_dir)}


if __name__ == "__main__":
    engine.run_cli(main)
