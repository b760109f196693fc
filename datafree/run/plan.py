"""A run as a plan of ticks: one integer is the whole resumable position.

A run is a fixed sequence of *ticks*, each one unit of work the loop does in order:

* ``datafree_kd.py`` (:class:`DistillationPlan`): per epoch, ``ep_steps // kd_steps`` rounds, each
  one SYNTHESIS tick (one ``synthesizer.synthesize()``) followed by ``kd_steps`` KD_STEP ticks, then
  one EPOCH_END tick (learning-rate step, evaluation, logging, checkpoint). The first ``warmup``
  epochs synthesise only: their rounds are a SYNTHESIS tick each (§10.7, §11.7).
* ``train_scratch.py`` (:class:`EpochPlan`): per epoch, ``steps`` TRAIN_STEP ticks, then EPOCH_END.

``plan[k]`` is the k-th tick as a frozen :class:`Tick`, computed from ``k`` by arithmetic (O(1), no
list of ticks), and ``len(plan)`` is the number of ticks, so that the loop reads top to bottom::

    for tick in range(run.tick, len(plan)):
        step = plan[tick]
        if step.kind == SYNTHESIS: ...

and ``last.pth`` stores one integer, the next tick to run. The plan is pure: it also says where a
run may stop (:meth:`Plan.stop_point`) and names a tick in the words of the messages
(:meth:`Plan.position`: epoch, round, KD step, ...), but it runs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

#: Tick kinds.
SYNTHESIS = "synthesis"     # one synthesizer.synthesize() call: the images of a round
KD_STEP = "kd_step"         # one KD step of the student
TRAIN_STEP = "train_step"   # one supervised step (train_scratch.py)
EPOCH_END = "epoch_end"     # learning-rate step, evaluation, logging, last.pth / best.pth


@dataclass(frozen=True)
class Tick:
    """One tick of a plan: what to run, and where it lies in the run.

    ``round`` is the synthesis round in the epoch and ``step`` the KD step in the round
    (distillation) or the training step in the epoch (``train_scratch.py``); at an epoch end the
    epoch's count stands there (``round == rounds``, or ``step == steps``). ``kd_step`` counts the KD
    steps run before this tick over the whole run: it is a KD step's index (for the methods'
    schedules and the NaN watch) and what the metrics of a synthesis round are keyed by.
    ``distilling`` is False in warm-up epochs (no KD step, no learning-rate step, no evaluation).
    """

    kind: str
    epoch: int
    round: int = 0
    step: int = 0
    kd_step: int = 0
    distilling: bool = True


class Plan:
    """What both plans share: indexing with bounds, the ticks of an epoch, positions in words.

    A subclass sets ``epochs`` and defines ``__len__``, :meth:`epoch_ticks`, :meth:`tick_of`
    (the tick at an offset within an epoch), :meth:`stop_point` and :meth:`position`.
    """

    epochs: int

    def __getitem__(self, tick: int) -> Tick:
        if not 0 <= tick < len(self):
            raise IndexError(f"tick {tick} is outside this plan of {len(self)} ticks")
        epoch = self.epoch_of(tick)
        return self.tick_of(epoch, tick - self.epoch_ticks(epoch).start)

    def __len__(self) -> int:
        raise NotImplementedError

    def epoch_ticks(self, epoch: int) -> range:
        """The ticks of ``epoch``, its EPOCH_END tick last."""
        raise NotImplementedError

    def epoch_of(self, tick: int) -> int:
        """The epoch that holds ``tick`` (``epochs`` for ``tick == len(plan)``, the end of the run)."""
        raise NotImplementedError

    def tick_of(self, epoch: int, offset: int) -> Tick:
        """The tick at ``offset`` within ``epoch``'s ticks."""
        raise NotImplementedError

    def stop_point(self, tick: int, collective: bool = False) -> bool:
        """Whether a run may stop before ``tick`` (and be resumed from it)."""
        raise NotImplementedError

    def position(self, tick: int) -> dict[str, int]:
        """Where the run stands before ``tick`` (0 ≤ tick ≤ len), in the words of the messages."""
        raise NotImplementedError

    def describe(self, tick: int) -> str:
        """``position(tick)`` as text, e.g. ``epoch 1, round 0, kd in round 0, kd step 4``."""
        return ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in self.position(tick).items())


@dataclass(frozen=True)
class DistillationPlan(Plan):
    """The ticks of ``datafree_kd.py`` (§3.4): ``epochs`` epochs, the first ``warmup`` synthesis only.

    An epoch has ``rounds = ep_steps // kd_steps`` rounds. A warm-up epoch is ``rounds`` SYNTHESIS
    ticks and its EPOCH_END (``rounds + 1`` ticks); a KD epoch is ``rounds`` times (SYNTHESIS,
    ``kd_steps`` KD_STEPs) and its EPOCH_END (``rounds · (kd_steps + 1) + 1`` ticks).
    """

    epochs: int
    warmup: int
    ep_steps: int
    kd_steps: int

    def __post_init__(self) -> None:
        if not (self.epochs >= 1 and 0 <= self.warmup <= self.epochs and 1 <= self.kd_steps <= self.ep_steps):
            raise ValueError(f"no plan for epochs {self.epochs}, warmup {self.warmup}, ep_steps {self.ep_steps}, "
                             f"kd_steps {self.kd_steps}: need epochs ≥ 1, 0 ≤ warmup ≤ epochs, 1 ≤ kd_steps ≤ ep_steps")

    @property
    def rounds(self) -> int:
        """Synthesis rounds per epoch."""
        return self.ep_steps // self.kd_steps

    @property
    def warmup_epoch_length(self) -> int:
        return self.rounds + 1

    @property
    def kd_epoch_length(self) -> int:
        return self.rounds * (self.kd_steps + 1) + 1

    @property
    def warmup_length(self) -> int:
        """Ticks of all warm-up epochs: the first KD epoch starts at this tick."""
        return self.warmup * self.warmup_epoch_length

    def __len__(self) -> int:
        return self.warmup_length + (self.epochs - self.warmup) * self.kd_epoch_length

    def epoch_of(self, tick: int) -> int:
        if tick < self.warmup_length:
            return tick // self.warmup_epoch_length
        return self.warmup + (tick - self.warmup_length) // self.kd_epoch_length

    def epoch_ticks(self, epoch: int) -> range:
        if epoch < self.warmup:
            start = epoch * self.warmup_epoch_length
            return range(start, start + self.warmup_epoch_length)
        start = self.warmup_length + (epoch - self.warmup) * self.kd_epoch_length
        return range(start, start + self.kd_epoch_length)

    def kd_steps_before(self, epoch: int) -> int:
        """KD steps in the epochs before ``epoch`` (none in warm-up epochs)."""
        return max(epoch - self.warmup, 0) * self.rounds * self.kd_steps

    def tick_of(self, epoch: int, offset: int) -> Tick:
        kd_step = self.kd_steps_before(epoch)
        if epoch < self.warmup:   # rounds of one SYNTHESIS tick, then the end
            if offset == self.rounds:
                return Tick(EPOCH_END, epoch, round=self.rounds, kd_step=kd_step, distilling=False)
            return Tick(SYNTHESIS, epoch, round=offset, kd_step=kd_step, distilling=False)
        if offset == self.kd_epoch_length - 1:
            return Tick(EPOCH_END, epoch, round=self.rounds, kd_step=kd_step + self.rounds * self.kd_steps)
        index, in_round = divmod(offset, self.kd_steps + 1)   # a round: SYNTHESIS, then its KD steps
        kd_step += index * self.kd_steps
        if in_round == 0:
            return Tick(SYNTHESIS, epoch, round=index, kd_step=kd_step)
        return Tick(KD_STEP, epoch, round=index, step=in_round - 1, kd_step=kd_step + in_round - 1)

    def stop_point(self, tick: int, collective: bool = False) -> bool:
        """Whether a run may stop before ``tick``: before a synthesis round or a KD step that is not
        its round's first; never before an epoch end (it closes the epoch with the tick before it)
        nor right after a synthesis round (its images would have to be saved). ``collective`` (under
        torchrun every stop check is an all-reduce): only before a synthesis round, i.e. at round
        and epoch boundaries, to keep the checks rare."""
        if not 0 <= tick < len(self):
            return False
        step = self[tick]
        if step.kind == SYNTHESIS:
            return True
        return step.kind == KD_STEP and step.step > 0 and not collective

    def position(self, tick: int) -> dict[str, int]:
        """Epoch, round, KD step in the round and KD steps done before ``tick``."""
        if tick == len(self):
            return {"epoch": self.epochs, "round": 0, "kd_in_round": 0, "kd_step": self.kd_steps_before(self.epochs)}
        step = self[tick]
        return {"epoch": step.epoch, "round": step.round, "kd_in_round": step.step, "kd_step": step.kd_step}


@dataclass(frozen=True)
class EpochPlan(Plan):
    """The ticks of ``train_scratch.py``: ``epochs`` epochs of ``steps`` TRAIN_STEP ticks and an EPOCH_END."""

    epochs: int
    steps: int

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.steps < 1:
            raise ValueError(f"no plan for epochs {self.epochs}, steps {self.steps}: need both ≥ 1")

    def __len__(self) -> int:
        return self.epochs * (self.steps + 1)

    def epoch_of(self, tick: int) -> int:
        return tick // (self.steps + 1)

    def epoch_ticks(self, epoch: int) -> range:
        return range(epoch * (self.steps + 1), (epoch + 1) * (self.steps + 1))

    def tick_of(self, epoch: int, offset: int) -> Tick:
        return Tick(EPOCH_END if offset == self.steps else TRAIN_STEP, epoch, step=offset)

    def stop_point(self, tick: int, collective: bool = False) -> bool:
        """Whether a run may stop before ``tick``: before any training step, never before an epoch
        end (it closes the epoch with the step before it); ``collective``: only at epoch boundaries."""
        if not 0 <= tick < len(self):
            return False
        step = self[tick]
        return step.kind == TRAIN_STEP and (step.step == 0 or not collective)

    def position(self, tick: int) -> dict[str, int]:
        """Epoch and step in the epoch before ``tick``."""
        if tick == len(self):
            return {"epoch": self.epochs, "step": 0}
        step = self[tick]
        return {"epoch": step.epoch, "step": step.step}
