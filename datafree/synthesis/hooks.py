"""Forward hooks on a (frozen) teacher: BN-statistics loss (§3.2) and CMI instance features (§4.5).

Both hook classes keep only the value of the **latest** forward pass and return tensors that
stay differentiable with respect to the images fed to the teacher, so a synthesizer reads them
right after the forward whose inputs it optimises. They never synchronise with the host.
Also here: :func:`freeze`, which makes a teacher constant (§7 item 15).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

#: Block counts of layer1..layer4 that identify a ResNet-34 (§1.2); used by CMI (§4.5).
RESNET34_BLOCKS = (3, 4, 6, 3)


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in ``eval()`` and turn off gradients of all its parameters; return it (§3.2, §7 item 15).

    A frozen teacher still passes gradients to its *inputs* (images, generator), but never
    fills ``.grad`` buffers of its own weights and uses its BN running statistics.
    """
    model.eval()
    model.requires_grad_(False)
    return model


class BatchNormStatisticsHook:
    """DeepInversion BN-statistics regulariser ``L_bn`` on every ``BatchNorm2d`` of a model (§3.2).

    For the input ``a`` (N×C×H×W) of BN layer j, with ``μ_j`` the mean and ``σ²_j`` the biased
    variance (divide by N·H·W) over (N, H, W), and ``μ̂_j``, ``σ̂²_j`` the layer's running buffers:

        r_j  = ‖σ̂²_j − σ²_j‖₂ + ‖μ̂_j − μ_j‖₂        (plain, not squared, Euclidean norms)
        L_bn = Σ_j r_j                                (unweighted sum over all BN layers)

    ``.loss`` is ``L_bn`` of the latest forward of the model (a pre-hook on the model clears
    the previous values), differentiable with respect to the model input. Statistics are
    computed in at least float32 (half / bfloat16 inputs under autocast are upcast).

    With ``skip_without_grad=True`` (default) forwards run with gradients disabled (the
    teacher's KD-step forwards) record nothing, so they cost no extra work; reading ``.loss``
    after such a forward raises ``RuntimeError``. Pass ``False`` to always compute.

    **Momentum** (Fast §10.4, NAYER §11.5; ``momentum = m > 0``): after :meth:`update_momentum`
    has been called once, the batch statistics are blended with buffers ``(μ̄_j, σ̄²_j)`` of past
    batches before the comparison,

        r_j = ‖σ̂²_j − ((1−m)σ²_j + m·σ̄²_j)‖₂ + ‖μ̂_j − ((1−m)μ_j + m·μ̄_j)‖₂,

    so the current batch is asked to make the running mixture of batches match the teacher.
    :meth:`update_momentum` (once per synthesis) sets the buffers from the statistics of the
    latest recorded forward the first time, then blends ``m·old + (1−m)·latest`` (detached).
    With ``m = 0`` (default) the hook is the plain §3.2 loss.

    Use as a context manager or call :meth:`remove` to detach the hooks.
    """

    def __init__(self, model: nn.Module, skip_without_grad: bool = True, momentum: float = 0.0) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.skip_without_grad = skip_without_grad
        self.momentum = momentum
        self.latest: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # detached (mean, var) per layer
        self.blended: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # (μ̄_j, σ̄²_j), after an update
        self.layers: list[nn.BatchNorm2d] = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no BatchNorm2d layer to hook")
        for layer in self.layers:
            if layer.running_mean is None or layer.running_var is None:
                raise ValueError("BN-statistics hook needs running statistics (track_running_stats=True)")
        self.layer_losses: dict[int, torch.Tensor] = {}
        self.handles: list[RemovableHandle] = [model.register_forward_pre_hook(self._clear)]
        for index, layer in enumerate(self.layers):
            self.handles.append(layer.register_forward_hook(self._make_hook(index)))

    def _clear(self, module: nn.Module, inputs: Any) -> None:
        """Forget the previous forward's values when a new forward of the model starts."""
        self.layer_losses = {}

    def _make_hook(self, index: int):
        """The forward hook of BN layer ``index``: stores ``r_j`` computed from the layer input."""

        def hook(layer: nn.BatchNorm2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if self.skip_without_grad and not torch.is_grad_enabled():
                return
            activations = inputs[0]
            activations = activations.to(torch.promote_types(activations.dtype, torch.float32))
            variance, mean = torch.var_mean(activations, dim=(0, 2, 3), unbiased=False)
            if self.momentum:
                self.latest[index] = (mean.detach(), variance.detach())
                if self.blended is not None:
                    past_mean, past_variance = self.blended[index]
                    mean = (1 - self.momentum) * mean + self.momentum * past_mean
                    variance = (1 - self.momentum) * variance + self.momentum * past_variance
            self.layer_losses[index] = (torch.linalg.vector_norm(layer.running_var - variance)
                                        + torch.linalg.vector_norm(layer.running_mean - mean))

        return hook

    @property
    def loss(self) -> torch.Tensor:
        """``L_bn = Σ_j r_j`` of the latest forward (0-d tensor)."""
        if len(self.layer_losses) == 0:
            raise RuntimeError("no BN statistics recorded: run a forward of the hooked model with "
                               "gradients enabled (or build the hook with skip_without_grad=False)")
        return torch.stack(list(self.layer_losses.values())).sum()

    def update_momentum(self) -> None:
        """Blend the latest recorded batch statistics into the momentum buffers (§10.4).

        Called once after each synthesis; the first call copies the statistics, later calls keep
        ``m·old + (1−m)·latest``. Does nothing without momentum or before any recorded forward.
        """
        if not self.momentum or len(self.latest) != len(self.layers):
            return
        latest = [self.latest[index] for index in range(len(self.layers))]
        if self.blended is None:
            self.blended = [(mean.clone(), variance.clone()) for mean, variance in latest]
        else:
            m = self.momentum
            self.blended = [(m * old_mean + (1 - m) * mean, m * old_variance + (1 - m) * variance)
                            for (old_mean, old_variance), (mean, variance) in zip(self.blended, latest)]

    def state_dict(self) -> dict[str, Any]:
        """The momentum buffers (empty lists before the first update)."""
        blended = self.blended or []
        return {"mean": [mean.cpu() for mean, _ in blended], "var": [variance.cpu() for _, variance in blended]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state["mean"]:
            self.blended = None
            return
        device = self.layers[0].running_mean.device
        self.blended = [(mean.to(device), variance.to(device)) for mean, variance in zip(state["mean"], state["var"])]

    def remove(self) -> None:
        """Detach all hooks from the model."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self) -> BatchNormStatisticsHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


class InstanceFeatureHook:
    """CMI instance features: per-sample spatial means of the inputs of given modules (§4.5).

    For each hooked module j with input ``a_j`` (B×C_j×H×W) the hook records
    ``h_j = mean over (H, W) of a_j`` (B×C_j, at least float32); ``.features`` is the concatenation
    ``[h_1, …, h_J]`` (B×d, d = Σ_j C_j) in the order of ``modules``, from the latest forward
    (each forward overwrites every module's record). The features stay differentiable with
    respect to the model input, so the contrastive loss trains the generator through them.
    """

    def __init__(self, modules: list[nn.Module]) -> None:
        if len(modules) == 0:
            raise ValueError("InstanceFeatureHook needs at least one module")
        self.modules = list(modules)
        self.recorded: dict[int, torch.Tensor] = {}
        self.handles: list[RemovableHandle] = [
            module.register_forward_hook(self._make_hook(index)) for index, module in enumerate(self.modules)]

    def _make_hook(self, index: int):
        """The forward hook of module ``index``: stores the spatial mean of its input."""

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
            activations = inputs[0]
            dtype = torch.promote_types(activations.dtype, torch.float32)
            self.recorded[index] = torch.mean(activations, dim=(2, 3), dtype=dtype)

        return hook

    @property
    def features(self) -> torch.Tensor:
        """Instance features ``(B, d)`` of the latest forward."""
        if len(self.recorded) != len(self.modules):
            raise RuntimeError(f"only {len(self.recorded)} of {len(self.modules)} hooked modules have run")
        return torch.cat([self.recorded[index] for index in range(len(self.modules))], dim=1)

    def remove(self) -> None:
        """Detach all hooks."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self) -> InstanceFeatureHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def _is_resnet34(model: nn.Module) -> bool:
    """True for the CIFAR ResNet-34 of §1.2: class ``ResNet`` with layer1..layer4 of 3, 4, 6, 3 blocks."""
    if type(model).__name__ != "ResNet":
        return False
    stages = [getattr(model, f"layer{number}", None) for number in range(1, 5)]
    if any(stage is None for stage in stages):
        return False
    return tuple(len(stage) for stage in stages) == RESNET34_BLOCKS


def instance_feature_modules(model: nn.Module) -> list[nn.Module]:
    """Modules whose inputs form the CMI instance feature (§4.5).

    * ResNet-34: ``layer1, layer2, layer3, layer4`` (input channels 64+64+128+256, d = 512);
    * any other model: every ``BatchNorm2d`` in module order (d = Σ BN channels, e.g. 2,704
      for wrn40_2 and 2,752 for vgg11).
    """
    if _is_resnet34(model):
        return [model.layer1, model.layer2, model.layer3, model.layer4]
    layers = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no BatchNorm2d layer for instance features")
    return layers
