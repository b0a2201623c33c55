"""The paper's optimisation recipe (section IV-B) and loss (Eq. 6)."""

from __future__ import annotations

import torch
from torch import nn

from lpn_edge.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD with Nesterov momentum; the pretrained backbones learn at `lr_backbone`, the new heads at `lr_head`."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    groups = [
        {"params": list(model.backbones.parameters()), "lr": config.lr_backbone, "name": "backbone"},
        {"params": list(model.classifiers.parameters()), "lr": config.lr_head, "name": "heads"},
    ]
    return torch.optim.SGD(groups, lr=config.lr_head, momentum=config.momentum, nesterov=config.nesterov,
                           weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """x `lr_gamma` at each epoch of `lr_steps` (the paper: x0.1 at epoch 80 of 120); stepped once per epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.lr_steps), gamma=config.lr_gamma)


def warmup_factor(epoch: int, step: int, steps_per_epoch: int, warmup_epochs: int) -> float:
    """The loss weight of step `step` (0-based) of epoch `epoch` (0-based): the authors' linear warm-up.

    Over the first `warmup_epochs` epochs (W = steps_per_epoch * warmup_epochs optimiser steps) the loss of the k-th
    step (k = 1..W, counted from the start of training) is scaled by min(1, 0.1 + 0.9 k / W); afterwards by 1. Like a
    learning-rate warm-up this scales the gradient step, but not the weight decay (the authors scale the loss).
    """
    if epoch >= warmup_epochs or steps_per_epoch < 1:
        return 1.0
    k = epoch * steps_per_epoch + step + 1
    return min(1.0, 0.1 + 0.9 * k / (steps_per_epoch * warmup_epochs))


def part_loss(logits: list[torch.Tensor], labels: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over parts of the cross-entropy (mean over the valid items of the batch).

    logits: n tensors (B, classes); labels (B,); valid (B,) bool or None (all valid). A batch with no valid item
    contributes 0 (but keeps the graph connected, so DistributedDataParallel sees every parameter used).
    """
    total = logits[0].new_zeros(())
    for part_logits in logits:
        losses = nn.functional.cross_entropy(part_logits.float(), labels, reduction="none")
        if valid is None:
            total = total + losses.mean()
        else:
            weights = valid.to(losses.dtype)
            total = total + (losses * weights).sum() / weights.sum().clamp_min(1.0)
    return total


def part_predictions(logits: list[torch.Tensor]) -> torch.Tensor:
    """Class prediction of a view: argmax of the summed softmax over parts (as the authors' training loop)."""
    return torch.stack([part.float().softmax(dim=1) for part in logits]).sum(0).argmax(dim=1)
