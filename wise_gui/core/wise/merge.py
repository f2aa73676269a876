"""Merging knowledge shards relative to the original weight W (wise-method.md section 4)."""

from __future__ import annotations

import torch


def trim_by_magnitude(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `density` fraction of entries with the largest magnitude, zero the rest."""
    keep = int(round(density * delta.numel()))
    if keep >= delta.numel():
        return delta.clone()
    if keep <= 0:
        return torch.zeros_like(delta)
    magnitudes = delta.abs().flatten()
    # The keep-th largest magnitude is the cut; ties at the cut are all kept.
    cut = torch.topk(magnitudes, keep, largest=True, sorted=False).values.min()
    return torch.where(delta.abs() >= cut, delta, torch.zeros_like(delta))


def ties_merge(base: torch.Tensor, weights: list[torch.Tensor], density: float) -> torch.Tensor:
    """TIES (Yadav et al., 2023): task vectors tau_i = W_i - base, trim each to its top `density` by
    magnitude, elect each entry's sign by the sum, average the entries that agree with it (the
    equal weights 1/k cancel in that mean), add to base."""
    deltas = torch.stack([trim_by_magnitude(w - base, density) for w in weights])
    elected = torch.sign(deltas.sum(dim=0))
    agree = (torch.sign(deltas) == elected) & (deltas != 0)
    count = agree.sum(dim=0)
    total = (deltas * agree).sum(dim=0)
    merged = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    return base + merged


def linear_merge(base: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """Mean of the task vectors, added to base."""
    return base + torch.stack([w - base for w in weights]).mean(dim=0)


def merge(base: torch.Tensor, weights: list[torch.Tensor], method: str, density: float) -> torch.Tensor:
    if method == "ties":
        return ties_merge(base, weights, density)
    if method == "linear":
        return linear_merge(base, weights)
    raise ValueError(f"unknown merge method {method!r}: choose ties or linear")
