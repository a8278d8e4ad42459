"""Mutual learning module with an adaptive temperature (eqs. 25-29).

Choices where the paper is not explicit:
* Pair direction follows eq. 28 (L^ct = KL(p_trans || p_cnn)): for a pair named (a, b) the
  loss is KL(p_b || p_a), i.e. L^ct = KL(p_trans || p_cnn), L^cm = KL(p_mamba || p_cnn),
  L^tm = KL(p_mamba || p_trans).
* The target p_b is NOT detached: eq. 28 is one term of one loss, so both branches of a pair
  move toward each other (mutual, not teacher -> student).
* The temperature softens both distributions (p = softmax(z / T)) as in knowledge
  distillation; T^2 restores the gradient scale. Eq. 28 alone would make T a plain loss weight.
* T is computed per sample from that sample's similarity and entropies and averaged inside the
  batch mean (eq. 28 with a per-sample T^2). The inputs of the temperature FC (Sim, H_a + H_b)
  are detached, so the KL term trains the temperature FC but does not push the branch features
  to change their similarity or entropy merely to alter T.
* A temperature that cannot collapse (issue 15). Trained on the loss it scales, T falls: T^2 * KL
  goes to 0 as T -> 0 whether the branches agree or not, so mutual learning switches itself off.
  Two guards, both here: (1) the T^2 factor is detached (it is knowledge distillation's
  gradient-scale restoration, a constant of each step, not something to optimise), so the FC
  learns T only through the softening of the two distributions; (2) a floor:
  T = floor + softplus(FC temp) + 1e-6, ``temperature_floor`` 1 by default (a temperature that
  only softens, never sharpens); floor 0 is eq. 27 as printed.
* One temperature FC (Linear(2, 1)) per pair, initialised so that softplus(FC temp) starts at 1.
* Branch heads get a label signal (``branch_ce_weight``, 1 by default): eq. 29 prints the CE on
  the fused head only, but eq. 26 calls each z a sub-network's "classification probability" and
  the entropies of eq. 27 only mean something if the heads are classifiers; without it the heads
  are trained by the KL terms alone and can agree on anything. 0 gives eq. 29 as printed.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Pair (a, b) -> loss name; the loss is KL(p_b || p_a) (eq. 28 order).
PAIRS: tuple[tuple[str, str, str], ...] = (("cnn", "trans", "kl_ct"), ("cnn", "mamba", "kl_cm"),
                                           ("trans", "mamba", "kl_tm"))


def entropy(logits: Tensor) -> Tensor:
    """Eq. 26: p = softmax(z), H = -sum_j p log p; (N, C) -> (N,)."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


class Temperature(nn.Module):
    """Eq. 27: T = floor + softplus(FC [Sim(f_a, f_b), H_a + H_b]) + 1e-6 -> (N,), always > floor."""

    def __init__(self, floor: float = 0.0) -> None:
        super().__init__()
        self.floor = float(floor)
        self.fc = nn.Linear(2, 1)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.constant_(self.fc.bias, math.log(math.e - 1))  # softplus(b) = 1

    def forward(self, f_a: Tensor, f_b: Tensor, z_a: Tensor, z_b: Tensor) -> Tensor:
        sim = F.cosine_similarity(f_a.float(), f_b.float(), dim=-1)  # eq. 25
        h = entropy(z_a.float()) + entropy(z_b.float())  # eq. 26
        temp = torch.stack([sim, h], dim=-1).detach()
        return self.floor + F.softplus(self.fc(temp)).squeeze(-1) + 1e-6  # eq. 27 (+ the floor)


def tempered_kl(z_student: Tensor, z_target: Tensor, T: Tensor) -> Tensor:
    """Eq. 28: mean_i T_i^2 sum_j p_t (log p_t - log p_s), both softened by T; (N, C), (N,) -> ().

    The T^2 factor carries no gradient (see the module docstring): T learns only through the
    softening, so the term cannot lower itself by shrinking T^2.
    """
    t = T.unsqueeze(-1)
    logp_t = F.log_softmax(z_target.float() / t, dim=-1)
    logp_s = F.log_softmax(z_student.float() / t, dim=-1)
    kl = (logp_t.exp() * (logp_t - logp_s)).sum(-1)
    return (T.detach() ** 2 * kl).mean()


class MutualLearning(nn.Module):
    """Loss of eq. 29 over the enabled branches; with ``enabled=False`` only the fused CE."""

    def __init__(self, branches: Sequence[str], enabled: bool = True, branch_ce_weight: float = 1.0,
                 temperature_floor: float = 1.0) -> None:
        super().__init__()
        self.enabled = enabled
        self.branch_ce_weight = branch_ce_weight
        self.pairs = [(a, b, name) for a, b, name in PAIRS if a in branches and b in branches]
        self.temps = nn.ModuleDict({name: Temperature(temperature_floor) for _, _, name in self.pairs}
                                   if enabled else {})

    def forward(self, logits: Tensor, branch_logits: Mapping[str, Tensor], branch_features: Mapping[str, Tensor],
                labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Return (L_total, {part: value}) for fused logits (N, C) and labels (N,)."""
        total = F.cross_entropy(logits.float(), labels)  # eq. 29: L_ce(z_total)
        parts = {"ce": float(total.detach())}
        if self.enabled and self.branch_ce_weight > 0:  # the heads serve mutual learning only
            # Eq. 29 prints no CE on the branch heads; see the module docstring for why they get one.
            for name, z in branch_logits.items():
                term = F.cross_entropy(z.float(), labels)
                total = total + self.branch_ce_weight * term
                parts[f"ce_{name}"] = float(term.detach())
        if self.enabled:
            for a, b, name in self.pairs:
                T = self.temps[name](branch_features[a], branch_features[b], branch_logits[a], branch_logits[b])
                term = tempered_kl(branch_logits[a], branch_logits[b], T)  # eq. 28, KL(p_b || p_a)
                total = total + term  # eq. 29
                parts[name] = float(term.detach())
                parts[f"T_{name}"] = float(T.detach().mean())
        return total, parts
