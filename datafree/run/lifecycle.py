"""The life of one training run, shared by ``train_scratch.py`` and ``datafree_kd.py``.

Both entry points build their own parts (a model and its data, or a student, a teacher and a
synthesizer) and run their own steps; everything around the steps is :class:`RunLifecycle`:

1. :meth:`RunLifecycle.open` — validate ``--save_dir`` (:class:`~datafree.run.directory.RunDirectory`),
   and for ``--resume`` read ``last.pth`` (``weights_only``) and check that the configuration is
   the same (paths excluded); only then create the directory, its marker and ``config.yaml``.
2. :meth:`RunLifecycle.attach` — take the run's :class:`~datafree.run.plan.Plan` (its ticks: synthesis
   rounds, KD or training steps, epoch ends) and restore every state and ``run.tick`` (the next
   tick to run, the whole resumable position) from ``last.pth``, or write the first ``last.pth``
   **before the first tick**, so that a stop at any moment (signal, ``kill -9``, NaN, full disk)
   leaves something ``--resume`` continues.
3. the loop, ``for tick in range(run.tick, len(plan))``: per epoch :meth:`begin_epoch` (an
   :class:`EpochMeter` that sums loss terms on the device, and the progress bar),
   :meth:`observe` / :meth:`check_losses` (NaN watch); after every tick :meth:`stop_after` (the
   tick is done; the tick's one stop check: signals and ``--max_minutes``) and, when it says so,
   :meth:`interrupt` (save, print how to continue); :meth:`end_epoch` — evaluation record, best
   tracking, ``metrics.jsonl`` / TensorBoard, ``best.pth`` and ``last.pth``.
4. :meth:`finish` — ``summary.json`` (best, last, mean of the last 5 epochs, wall time, peak
   memory, precision) from ``metrics.jsonl``.

In multi-process runs only rank 0 writes; every rank restores the same checkpoint.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
from tqdm import tqdm

from datafree.run import distributed
from datafree.run.checkpoints import (CHECKPOINT_FORMAT, WriteError, atomic_save, atomic_write_text, load_checkpoint,
                                  save_classifier)
from datafree.run.cli import check_resume_config, resume_hint
from datafree.errors import CheckpointError
from datafree.metrics_log import readable_records
from datafree.run.numerics import peak_memory_mb
from datafree.run.plan import Plan
from datafree.run.directory import MetricsLogger, RunDirectory
from datafree.run.seeding import capture_rng_state, restore_rng_state
from datafree.run.signals import StopRequest
from datafree.run.stopping import LossWatch, TimeBudget

#: Fidelity metrics (§6.3) whose best value over epochs is tracked.
FIDELITY_KEYS = ("agreement1", "prob_loyalty_ref", "prob_loyalty_js")


class EpochMeter:
    """Weighted sums of an epoch's loss terms, kept on the device (one host sync per epoch).

    ``add(terms, weight)`` adds ``value·weight`` and ``weight`` per term; :meth:`means` reads the
    weighted means back. :meth:`time_synthesis` runs a ``synthesize()`` call and adds its time to
    ``synthesis_seconds`` (CUDA events on a GPU, read at the end of the epoch: no host sync), the
    synthesis-only time FastDFKD reports beside the whole epoch's time (METHODS.md §13 item 10).
    The sums, the seconds and the images seen survive a stop in the middle of an epoch through
    :meth:`state` (stored in ``last.pth``) and the ``partial`` argument.
    """

    def __init__(self, device: torch.device, partial: Mapping[str, Any] | None = None) -> None:
        partial = partial or {}
        self.device = device
        self.sums = {name: torch.tensor(value, device=device) for name, value in partial.get("sums", {}).items()}
        self.weights: dict[str, float] = dict(partial.get("weights", {}))
        self.seconds = float(partial.get("seconds", 0.0))
        self.synthesis_seconds = float(partial.get("synthesis_seconds", 0.0))
        self.images = int(partial.get("images", 0))
        self.started = time.perf_counter()
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def add(self, terms: Mapping[str, torch.Tensor], weight: float = 1.0) -> None:
        for name, value in terms.items():
            contribution = value.detach().float() * weight
            self.sums[name] = self.sums[name] + contribution if name in self.sums else contribution
            self.weights[name] = self.weights.get(name, 0.0) + weight

    def time_synthesis(self, synthesize: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Run ``synthesize()`` and add its duration to ``synthesis_seconds``."""
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            terms = synthesize()
            end.record()
            self._events.append((start, end))
            return terms
        started = time.perf_counter()
        terms = synthesize()
        self.synthesis_seconds += time.perf_counter() - started
        return terms

    def pause(self) -> float:
        """Add the time since the last (re)start to ``seconds`` (syncing the device first)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.synthesis_seconds += sum(start.elapsed_time(end) for start, end in self._events) / 1000.0
            self._events = []
        now = time.perf_counter()
        self.seconds += now - self.started
        self.started = now
        return self.seconds

    def means(self) -> dict[str, float]:
        return {name: float(total) / self.weights[name] for name, total in self.sums.items()}

    def state(self) -> dict[str, Any]:
        return {"sums": {name: float(total) for name, total in self.sums.items()}, "weights": dict(self.weights),
                "seconds": self.seconds, "synthesis_seconds": self.synthesis_seconds, "images": self.images}


class RunLifecycle:
    """Resume, stop, NaN watch, logging, checkpoints and summary of one run (see module docstring).

    ``identity`` is stored in every checkpoint (``arch``, ``num_classes``, ``dataset``: what makes
    ``last.pth`` and ``best.pth`` loadable as classifiers). ``protected`` are input files that
    ``--overwrite`` must never delete (the teacher checkpoint).
    """

    def __init__(self, options: dict[str, Any], kind: str, identity: dict[str, Any], device: torch.device,
                 stop: StopRequest, context: distributed.DistributedContext | None = None,
                 protected: tuple[str, ...] = ()) -> None:
        self.options = options
        self.kind = kind
        self.identity = identity
        self.device = device
        self.stop = stop
        self.context = context or distributed.DistributedContext()
        self.is_main = self.context.is_main
        self.directory = RunDirectory(options["save_dir"], kind)
        self.protected = protected
        self.budget = TimeBudget(options["max_minutes"])
        self.watch = LossWatch(device)
        self.checkpoint: dict[str, Any] | None = None
        self.states: dict[str, Any] = {}
        self.model: nn.Module | None = None
        self.plan: Plan | None = None
        self.tick = 0
        self.bar: tqdm | None = None
        self.partial: dict[str, Any] = {}
        self.best_acc1 = 0.0
        self.best_fidelity: dict[str, float] = {}
        self.saved_at = "no state yet"
        self.opened_mode = ""
        self.logger = MetricsLogger(None)

    @property
    def run_dir(self) -> Path:
        return self.directory.path

    # ------------------------------------------------------------------ 1. open
    def open(self, config: dict[str, Any]) -> None:
        """Validate the directory (and the saved run when resuming), then create what is needed.

        Nothing is created or deleted before every check has passed.
        """
        options = self.options
        if self.is_main:
            mode = self.directory.validate(options["resume"], options["overwrite"], self.protected)
            if mode in ("resume", "restart"):
                check_resume_config(self.directory.read_config(), config)
            if mode == "resume":
                self.checkpoint = self.read_last()
            self.directory.open(mode)
            self.opened_mode = mode
            if mode != "resume":
                self.directory.write_config(config)
            if mode == "restart":
                print(f"{self.run_dir} holds no checkpoint yet: starting its run from the beginning")
        distributed.barrier(self.context)
        if not self.is_main and options["resume"] and (self.run_dir / "last.pth").is_file():
            self.checkpoint = self.read_last()

    def read_last(self) -> dict[str, Any]:
        """``last.pth`` of this directory, checked to be a checkpoint of this kind and version.

        A checkpoint from before the tick format (its position a dict of epoch, round, ... and no
        ``tick``) is refused in one line: the position cannot be carried over reliably.
        """
        path = self.run_dir / "last.pth"
        checkpoint = load_checkpoint(path)
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT \
                or checkpoint.get("kind") != self.kind:
            raise CheckpointError(f"{path} was written by another version of datafree (or another program) and "
                                  "cannot be resumed; start anew with --overwrite")
        if "tick" not in checkpoint and isinstance(checkpoint.get("position"), dict):
            raise CheckpointError(f"{path} predates the tick format (it stores its position as "
                                  f"{checkpoint['position']}, not as a tick) and cannot be resumed by this version; "
                                  "start a new run: drop --resume and pass --overwrite or another --save_dir")
        return checkpoint

    # ------------------------------------------------------------------ 2. attach
    def attach(self, states: dict[str, Any], model: nn.Module, plan: Plan) -> None:
        """Register what ``last.pth`` holds (name -> object with ``state_dict``/``load_state_dict``;
        ``model`` is the classifier being trained) and the run's ``plan``, and restore them, or save
        them as the first ``last.pth``. The loop then starts at ``self.tick``."""
        self.states, self.model, self.plan = states, model, plan
        if self.checkpoint is None:
            self.tick = 0
            try:
                self.save_last()
            except WriteError as error:   # e.g. a full disk: leave no half-made run behind
                if self.is_main and self.opened_mode in ("new", "overwrite"):
                    self.directory.abandon()
                    raise WriteError(error.problem, "nothing of this run was kept: free space or fix the permissions "
                                                    f"of {self.run_dir.parent}, then run the same command again") from None
                raise
        else:
            self.restore(self.checkpoint)
            self.checkpoint = None
            if self.is_main:
                print(f"resuming {self.run_dir} at {self.describe_position()} ({self.describe_tick()})")
        self.logger = MetricsLogger(self.directory if self.is_main else None, self.position["epoch"])

    def restore(self, checkpoint: dict[str, Any]) -> None:
        path = self.run_dir / "last.pth"
        try:
            for name, state in self.states.items():
                state.load_state_dict(checkpoint[name])
            restore_rng_state(checkpoint["rng"])
            self.tick = int(checkpoint["tick"])
            self.best_acc1, self.best_fidelity = checkpoint["best_acc1"], dict(checkpoint["best_fidelity"])
            self.partial = checkpoint["partial_epoch"]
        except KeyError as error:
            raise CheckpointError(f"{path} lacks the entry {error}: it was written by another version of datafree "
                                  "and cannot be resumed; start anew with --overwrite") from None
        if not 0 <= self.tick <= len(self.plan):
            raise CheckpointError(f"{path} is at tick {self.tick}, outside this run's {len(self.plan)} ticks; "
                                  "start anew with --overwrite")
        self.saved_at = f"the state at {self.describe_position()}"

    @property
    def position(self) -> dict[str, int]:
        """Where the run stands (before ``self.tick``) in the plan's words: epoch, round, step, ..."""
        return self.plan.position(self.tick)

    def describe_position(self) -> str:
        return self.plan.describe(self.tick)

    def describe_tick(self) -> str:
        """``tick 7 of 14``: the next tick and the plan's length, for messages."""
        return f"tick {self.tick} of {len(self.plan)}"

    # ------------------------------------------------------------------ 3. during the run
    def begin_epoch(self) -> EpochMeter:
        """Start (or continue, after a resume) the bookkeeping of the epoch that holds ``self.tick``:
        its meter, the NaN watch, peak memory, and a progress bar over the epoch's ticks before its end."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        meter, self.partial = EpochMeter(self.device, self.partial), {}
        self.watch.reset()
        epoch = self.plan.epoch_of(self.tick)
        ticks = self.plan.epoch_ticks(epoch)
        self.bar = tqdm(total=len(ticks) - 1, initial=self.tick - ticks.start, desc=f"epoch {epoch}", leave=False,
                        disable=not (self.options["progress"] and self.is_main))
        return meter

    def observe(self, step: int, terms: Mapping[str, torch.Tensor]) -> None:
        """Watch loss terms for NaN / inf (no host sync)."""
        self.watch.observe(step, dict(terms))

    def check_losses(self, epoch: int) -> None:
        """Raise NonFiniteLossError (one host sync) if a watched term was not finite."""
        self.watch.check(epoch, self.saved_at)

    def should_stop(self, all_ranks: bool = False) -> bool:
        """A signal arrived or ``--max_minutes`` is spent. ``all_ranks``: agree across ranks
        (a collective call: every rank must make it at the same point)."""
        flag = self.stop.requested or self.budget.exhausted()
        if all_ranks and self.context.enabled:
            return distributed.any_rank(flag, self.context, self.device)
        return flag

    def stop_after(self, tick: int) -> bool:
        """``tick`` is done: the run now resumes after it, and the progress bar moves. Then the
        tick's one stop check: True when a stop was requested (signal, ``--max_minutes``) and the
        plan allows one before the next tick (:meth:`Plan.stop_point`). Under torchrun the check is
        collective (an all-reduce, so the plan allows it only at round and epoch boundaries)."""
        self.tick = tick + 1
        if self.bar is not None:
            self.bar.update(1)
        return self.plan.stop_point(self.tick, collective=self.context.enabled) and self.should_stop(all_ranks=True)

    def close_bar(self) -> None:
        """Close the epoch's progress bar (before the end-of-epoch lines, or a stop's)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def interrupt(self, meter: EpochMeter | None) -> dict[str, Any]:
        """Stop before ``self.tick``: check the losses, save ``last.pth`` with the partial epoch
        (``meter``; None between epochs, or before the first tick), say how to continue."""
        self.close_bar()
        self.check_losses(self.position["epoch"])
        partial = self.partial if meter is None else {**meter.state(), "seconds": meter.pause()}
        self.save_last(partial)
        if self.is_main:
            reason = self.stop.signal_name or f"--max_minutes {self.options['max_minutes']}"
            print(f"stopped by {reason} at {self.describe_position()} ({self.describe_tick()}); "
                  f"checkpoint {self.run_dir / 'last.pth'}; continue with: {resume_hint()}")
        self.logger.close()
        return {"stopped": True, "tick": self.tick, "position": self.position, "run_dir": str(self.run_dir)}

    def save_last(self, partial: dict[str, Any] | None = None) -> None:
        """Write ``last.pth`` atomically (rank 0): every registered state, RNG, the tick, bests."""
        self.saved_at = f"the state at {self.describe_position()}"
        if not self.is_main:
            return
        checkpoint = {"format": CHECKPOINT_FORMAT, "kind": self.kind, **self.identity,
                      "epoch": self.position["epoch"], "tick": self.tick,
                      "best_acc1": self.best_acc1, "best_fidelity": dict(self.best_fidelity),
                      "partial_epoch": partial or {}, "rng": capture_rng_state(), "config": self.options}
        checkpoint.update({name: state.state_dict() for name, state in self.states.items()})
        atomic_save(checkpoint, self.run_dir / "last.pth")

    # ------------------------------------------------------------------ end of epoch
    def end_epoch(self, epoch: int, meter: EpochMeter, record: dict[str, Any],
                  evaluate: Callable[[], dict[str, float]] | None,
                  preview: torch.Tensor | None = None) -> dict[str, Any] | None:
        """Close ``epoch``: the run moves past its EPOCH_END tick; evaluate (``evaluate`` is None in
        warm-up epochs, which are logged without accuracy), log, keep the best, save ``last.pth``
        (which resumes at the next epoch).

        ``record`` holds the entry point's values (e.g. lr, schedule values); the meter's means,
        seconds, images/s and peak memory are added here. Returns the logged record (rank 0).
        """
        self.close_bar()
        self.tick = self.plan.epoch_ticks(epoch).stop
        seconds = meter.pause()
        if not self.is_main:
            self.save_last()
            return None
        record = {"epoch": epoch, **record, **meter.means(), "epoch_seconds": seconds,
                  "images_per_second": meter.images * self.context.world_size / max(seconds, 1e-9)}
        if meter.synthesis_seconds:
            record["synthesis_seconds"] = meter.synthesis_seconds
        memory = peak_memory_mb(self.device)
        if memory is not None:
            record["peak_memory_mb"] = memory
        if evaluate is not None:
            evaluation = evaluate()
            is_best = evaluation["acc1"] > self.best_acc1
            self.best_acc1 = max(self.best_acc1, evaluation["acc1"])
            for key in FIDELITY_KEYS:
                if key in evaluation:
                    self.best_fidelity[key] = max(self.best_fidelity.get(key, float("-inf")), evaluation[key])
            record.update(evaluation, best_acc1=self.best_acc1,
                          **{f"best_{key}": value for key, value in self.best_fidelity.items()})
            print(f"[Eval] Epoch={epoch} Acc@1={evaluation['acc1']:.2f} Acc@5={evaluation['acc5']:.2f} "
                  f"Loss={evaluation['loss']:.4f} Lr={record.get('lr', 0.0):.4g} Best={self.best_acc1:.2f} "
                  f"({seconds:.1f}s)")
            if is_best:
                save_classifier(self.run_dir / "best.pth", self.model, self.identity["arch"],
                                self.identity["num_classes"], self.identity["dataset"], epoch=epoch,
                                acc1=evaluation["acc1"], **{k: v for k, v in self.identity.items()
                                                            if k not in ("arch", "num_classes", "dataset")})
        else:
            record["warmup"] = True
            print(f"[Warm-up] Epoch={epoch} (synthesis only, no KD step) ({seconds:.1f}s)")
        self.logger.log(record)
        if preview is not None:
            self.logger.log_images("synthesized", preview, epoch)
        self.save_last()
        return record

    # ------------------------------------------------------------------ 4. finish
    def finish(self, identity: dict[str, Any]) -> dict[str, Any]:
        """Write ``summary.json`` (rank 0) from ``metrics.jsonl`` and print it; returns the summary."""
        self.logger.close()
        if not self.is_main:
            return {"stopped": False, "run_dir": str(self.run_dir)}
        records = readable_records(self.run_dir / "metrics.jsonl")
        evaluated = [record for record in records if "acc1" in record]
        accuracies = [record["acc1"] for record in evaluated]
        memories = [record["peak_memory_mb"] for record in records if "peak_memory_mb" in record]
        summary = {**identity, "precision": self.options["precision"], "epochs": len(records),
                   "best_acc1": self.best_acc1,
                   "best_epoch": evaluated[accuracies.index(max(accuracies))]["epoch"] if accuracies else None,
                   "last_acc1": accuracies[-1] if accuracies else None,
                   "mean_last5_acc1": sum(accuracies[-5:]) / len(accuracies[-5:]) if accuracies else None,
                   "wall_seconds": sum(record["epoch_seconds"] for record in records),
                   "synthesis_seconds": sum(record.get("synthesis_seconds", 0.0) for record in records),
                   "peak_memory_mb": max(memories) if memories else None}
        atomic_write_text(json.dumps(summary, indent=2), self.run_dir / "summary.json")
        print("summary: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in summary.items()))
        print(f"run directory: {self.run_dir} (TensorBoard: tensorboard --logdir {self.run_dir})")
        return {"stopped": False, **summary, "run_dir": str(self.run_dir)}
