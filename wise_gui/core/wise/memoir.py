"""A MEMOIR-style memory (after Wang, Qin et al., "MEMOIR: Lifelong Model Editing with Minimal Overwrite
and Informed Retention for LLMs", NeurIPS 2025, arXiv 2506.07899), written for this engine.

One residual memory R beside the down projection: the layer computes W a + R (a * m), where m is a 0/1
mask over the projection's inputs. An edit's mask comes from its question: the k inputs where the
mean activation over the question's tokens, minus that of unrelated text, is largest in magnitude,
moved through a fixed random permutation ("TopHash"), so each edit writes its own scattered subset of
R's columns and edits barely overwrite each other. At inference the query's mask is made the same way;
when it shares at least `overlap_threshold` of its entries with a stored edit's mask, R answers with that
edit's mask, otherwise the layer is the unedited one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from wise_gui.core.inference import MAIN
from wise_gui.core.wise.memory import RouteInfo, WiseLayer, question_features, token_distances


@dataclass
class ResidualMemory:
    residual: torch.Tensor  # like W (same layout), zero where no edit wrote
    k: int  # inputs per mask
    permutation: torch.Tensor  # [in] the fixed hash of input indices
    overlap_threshold: float
    background: torch.Tensor | None = None  # mean question feature of unrelated text
    masks: list[torch.Tensor] = field(default_factory=list)  # per edit: its k input indices (int64)
    edit_scores: list[float] = field(default_factory=list)  # kept for the plots: each edit's score after training
    total_edits: int = 0

    @classmethod
    def empty(cls, weight: torch.Tensor, transposed: bool, mask_ratio: float, overlap_threshold: float,
              seed: int) -> ResidualMemory:
        inputs = weight.shape[0] if transposed else weight.shape[1]
        generator = torch.Generator().manual_seed(seed * 7_919 + 17)
        permutation = torch.randperm(inputs, generator=generator)
        k = max(1, min(inputs, round(mask_ratio * inputs)))
        return cls(torch.zeros_like(weight), k, permutation, overlap_threshold)

    def __post_init__(self) -> None:
        self._stacked: torch.Tensor | None = None  # the masks as rows of 0/1, grown as edits are added

    def __len__(self) -> int:
        return len(self.masks)

    def _stored_masks(self, inputs: int, device) -> torch.Tensor:
        """[M, in] 0/1 rows of the stored masks, extended by the masks added since the last call."""
        done = 0 if self._stacked is None else self._stacked.shape[0]
        if done < len(self.masks):
            new = torch.stack([self.input_mask(m, inputs, device) for m in self.masks[done:]])
            self._stacked = new if self._stacked is None else torch.cat([self._stacked.to(device), new])
        return self._stacked.to(device)

    def clone(self) -> ResidualMemory:
        """Training changes the residual in place; the masks are never changed, only appended."""
        return ResidualMemory(self.residual.clone(), self.k, self.permutation, self.overlap_threshold,
                              self.background, list(self.masks), list(self.edit_scores), self.total_edits)

    def nbytes(self) -> int:
        return self.residual.nbytes + sum(m.nbytes for m in self.masks)

    # ---- masks ---------------------------------------------------------------------------------------

    def fingerprint(self, features: torch.Tensor) -> torch.Tensor:
        """[B, in] features -> [B, k] input indices: TopHash of the features relative to unrelated text."""
        if self.background is not None:
            features = features - self.background.to(features.device)
        top = features.abs().topk(self.k, dim=-1).indices
        return self.permutation.to(top.device)[top]

    def input_mask(self, indices: torch.Tensor, size: int, device) -> torch.Tensor:
        mask = torch.zeros(size, device=device)
        mask[indices.to(device)] = 1.0
        return mask

    def edit_weight(self, weight: torch.Tensor, transposed: bool, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W + R on the edit's inputs, the gradient mask of those inputs): what training an edit starts from."""
        inputs = weight.shape[0] if transposed else weight.shape[1]
        mask = self.input_mask(indices, inputs, weight.device)
        grad_mask = mask.unsqueeze(1).expand_as(weight) if transposed else mask.unsqueeze(0).expand_as(weight)
        return weight + self.residual * grad_mask, grad_mask.contiguous()

    def store(self, trained: torch.Tensor, weight: torch.Tensor, grad_mask: torch.Tensor, indices: torch.Tensor,
              score: float) -> None:
        """Keeps a trained edit: R takes the change on the edit's inputs, the mask is stored."""
        chosen = grad_mask.bool()
        self.residual = torch.where(chosen, trained - weight, self.residual)
        self.masks.append(indices.cpu())
        self.edit_scores.append(score)
        self.total_edits += 1

    # ---- routing -------------------------------------------------------------------------------------

    def _masked_input(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return x * self.input_mask(self.masks[index], x.shape[-1], x.device).to(x.dtype)

    def output(self, layer: WiseLayer, x: torch.Tensor, main_out: torch.Tensor, index: int) -> torch.Tensor:
        masked = self._masked_input(x, index)
        if layer.transposed:
            change = masked.reshape(-1, x.shape[-1]) @ self.residual
        else:
            change = masked.reshape(-1, x.shape[-1]) @ self.residual.t()
        return main_out + change.view(main_out.shape).to(main_out.dtype)

    def route(self, layer: WiseLayer, x: torch.Tensor, main_out: torch.Tensor,
              token_mask: torch.Tensor | None) -> RouteInfo:
        inputs = x.shape[-1]
        query = self.fingerprint(question_features(x, token_mask))  # [B, k]
        query_masks = torch.zeros((x.shape[0], inputs), device=x.device).scatter_(1, query, 1.0)
        stored = self._stored_masks(inputs, x.device)  # [M, in]
        overlap = (query_masks @ stored.t()) / self.k  # [B, M]
        score, best = overlap.max(dim=1)
        choice = torch.where(score >= self.overlap_threshold, best, MAIN)
        per_token = torch.zeros(x.shape[:2], device=x.device)
        for index in sorted(set(best.tolist())):
            rows = best == index
            distances = token_distances(layer.act_fn, self.output(layer, x, main_out, index), main_out).float()
            if token_mask is not None:
                distances = distances * token_mask.to(distances.dtype)
            per_token = torch.where(rows.unsqueeze(1), distances, per_token)
        return RouteInfo(choice=choice.cpu(), best=best.cpu(), score=score.detach().float().cpu(),
                         threshold=torch.full_like(score, self.overlap_threshold).cpu(),
                         per_token=per_token.detach().cpu(), scored=0)
