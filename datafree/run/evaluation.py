"""Test-set evaluation of a classifier: top-1, top-5, cross-entropy and fidelity (METHODS.md §3.6, §6).

Evaluation always runs in fp32, whatever the training precision (``--precision bf16`` trains in
the fast mode but is measured like the reference runs), with the model in ``eval()``.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from datafree.errors import UsageError
from datafree.run.fidelity import FidelityMeter


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             teacher: nn.Module | None = None) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy on labelled batches (§3.6, §6.1).

    With ``teacher`` also the fidelity metrics of §6.3 (Agreement@1, probability loyalty).
    Everything in fp32; sums stay on the device, with one host sync at the end.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct1 = torch.zeros((), device=device)
    correct5 = torch.zeros((), device=device)
    loss_sum = torch.zeros((), device=device)
    count = 0
    fidelity = FidelityMeter() if teacher is not None else None
    for images, labels in batches:
        logits = model(images).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top5.eq(labels[:, None])
        correct1 += hits[:, 0].sum()
        correct5 += hits.any(dim=1).sum()
        count += labels.shape[0]
        if fidelity is not None:
            fidelity.update(logits, teacher(images).float())
    model.train(was_training)
    if count == 0:
        raise UsageError("evaluation set is empty")
    result = {"acc1": 100.0 * correct1.item() / count, "acc5": 100.0 * correct5.item() / count,
              "loss": loss_sum.item() / count}
    if fidelity is not None:
        result.update(fidelity.compute())
    return result
