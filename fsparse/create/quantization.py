"""Eager-mode quantization-aware training (``torch.ao.quantization``), in place.

* :func:`prepare_qat` fuses Conv-BN(-ReLU), Conv-ReLU and Linear-ReLU chains
  found by ``torch.fx`` tracing (no fusion if the model does not trace), sets
  the x86 default QAT qconfig on Linear/Conv layers only (embeddings and other
  layers stay float) and swaps them for their QAT versions with ``prepare_qat``.
  Swapped modules reuse the original ``Parameter`` objects, so the optimizer
  and the pruning masks keep working.
* :func:`disable_observers` freezes the quantization ranges.
* :func:`freeze_bn` freezes BN statistics: fused layers with
  ``freeze_bn_stats``; plain BatchNorm layers are held in eval mode by a
  forward pre-hook (running statistics used and no longer updated).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch.ao.nn.intrinsic as intrinsic
import torch.ao.nn.intrinsic.qat as intrinsic_qat
import torch.ao.quantization as tq
import torch.fx
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["disable_observers", "freeze_bn", "fusion_groups", "prepare_qat"]

_CONVS = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch.ao.quantization's deprecation and ``reduce_range`` notices."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")
        yield


def _only_user(node: torch.fx.Node, calls: Counter[object]) -> torch.fx.Node | None:
    users = list(node.users)
    if len(users) != 1 or users[0].op != "call_module" or calls[users[0].target] != 1:
        return None
    return users[0]


def fusion_groups(model: nn.Module) -> list[list[str]]:
    """Module-name chains that ``fuse_modules_qat`` can fuse; ``[]`` if tracing fails.

    >>> m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten())
    >>> fusion_groups(m)
    [['0', '1', '2']]
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # any model torch.fx cannot trace is simply left unfused
        return []
    modules = dict(model.named_modules())
    calls: Counter[object] = Counter(n.target for n in graph.nodes if n.op == "call_module")
    groups = []
    for node in graph.nodes:
        head = modules.get(node.target) if node.op == "call_module" else None
        if head is None or calls[node.target] != 1 or type(head) not in (*_CONVS, nn.Linear):
            continue
        group, current = [str(node.target)], node
        bn_type = _CONVS.get(type(head))  # type: ignore[call-overload]
        nxt = _only_user(current, calls)
        if bn_type is not None and nxt is not None:
            bn = modules[str(nxt.target)]
            if type(bn) is bn_type and bn.affine and bn.track_running_stats:  # type: ignore[union-attr]
                group.append(str(nxt.target))
                current = nxt
                nxt = _only_user(current, calls)
        if nxt is not None and type(modules[str(nxt.target)]) is nn.ReLU:
            group.append(str(nxt.target))
        if len(group) > 1:
            groups.append(group)
    return groups


def prepare_qat(model: nn.Module) -> None:
    """Fuse and swap ``model``'s Linear/Conv layers for QAT modules, in place."""
    was_training = model.training
    model.train()
    with _quiet():
        groups = fusion_groups(model)
        if groups:
            tq.fuse_modules_qat(model, groups, inplace=True)
        qconfig = tq.get_default_qat_qconfig("x86")
        for module in model.modules():
            if type(module) in (*_CONVS, nn.Linear) or isinstance(module, intrinsic._FusedModule):
                module.qconfig = qconfig  # type: ignore[assignment]
        tq.prepare_qat(model, inplace=True)
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is None:
            continue
        for child in module.children():
            if isinstance(child, (tq.FakeQuantizeBase, tq.ObserverBase)):
                child.to(weight.device)
    model.train(was_training)


def disable_observers(model: nn.Module) -> None:
    """Stop every observer of ``model`` (fake quantization stays on)."""
    with _quiet():
        model.apply(tq.disable_observer)


def _hold_eval(module: nn.Module, args: object) -> None:
    module.training = False


def freeze_bn(model: nn.Module) -> list[RemovableHandle]:
    """Freeze BN statistics; returns the hooks that hold plain BN layers in eval mode."""
    model.apply(intrinsic_qat.freeze_bn_stats)
    fused_bns = {
        id(m.bn) for m in model.modules() if hasattr(m, "freeze_bn_stats") and hasattr(m, "bn")
    }
    handles = []
    for module in model.modules():
        if type(module) in _BATCH_NORMS and id(module) not in fused_bns:
            module.training = False
            handles.append(module.register_forward_pre_hook(_hold_eval))
    return handles
