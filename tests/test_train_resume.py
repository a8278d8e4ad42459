"""Training checkpoints (issue 6, "nothing is lost"): an interrupted BDGF training resumes from its
last epoch and ends with exactly the weights and history of an uninterrupted run (CPU)."""
from __future__ import annotations

import pytest
import torch

from bdgf_core.errors import BdgfError, Cancelled
from bdgf_core.network import BDGFConfig
from bdgf_core.training import fit_bdgf
from test_training import CFG, _scene


def _interrupt_after(epochs: int):
    """(progress, cancelled) callbacks that cancel the run once ``epochs`` epochs are done."""
    state = {"done": 0}

    def progress(frac, msg):
        if msg.startswith("epoch"):
            state["done"] += 1

    return progress, lambda: state["done"] >= epochs


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path):
    spec, sar, feat, tr, va = _scene()
    cfg = BDGFConfig(**{**CFG, "epochs": 4, "milestones": (1, 3)})
    ref, ref_hist = fit_bdgf(spec, sar, feat, tr, va, 3, cfg)
    ckpt = str(tmp_path / ".m.checkpoint")
    progress, cancelled = _interrupt_after(2)
    with pytest.raises(Cancelled):
        fit_bdgf(spec, sar, feat, tr, va, 3, cfg, progress=progress, cancelled=cancelled, checkpoint=ckpt)
    messages = []
    net, hist = fit_bdgf(spec, sar, feat, tr, va, 3, cfg, checkpoint=ckpt,
                         progress=lambda f, m: messages.append(m))
    assert messages[0] == "resumed after epoch 2 from the checkpoint" and len(messages) == 1 + 2
    for (k, a), b in zip(ref.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k
    for key in ("loss", "val_oa", "val_loss", "lr", "best_epoch", "best_val_oa", "best_val_loss"):
        assert hist[key] == ref_hist[key], key
    assert hist["lr"] == pytest.approx([4e-4, 2e-4, 2e-4, 1e-4])  # the schedule was replayed


def test_writing_checkpoints_does_not_change_the_run(tmp_path):
    spec, sar, feat, tr, va = _scene()
    cfg = BDGFConfig(**{**CFG, "epochs": 2})
    a, ha = fit_bdgf(spec, sar, feat, tr, va, 3, cfg)
    b, hb = fit_bdgf(spec, sar, feat, tr, va, 3, cfg, checkpoint=str(tmp_path / "c"))
    assert ha["loss"] == hb["loss"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert (tmp_path / "c").is_file()


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    spec, sar, feat, tr, va = _scene()
    ckpt = str(tmp_path / "c")
    fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**{**CFG, "epochs": 1}), checkpoint=ckpt)
    with pytest.raises(BdgfError, match="belongs to another training run"):
        fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**{**CFG, "epochs": 1, "seed": 5}), checkpoint=ckpt)
    other = _scene(seed=1)
    with pytest.raises(BdgfError, match="delete it to start afresh"):
        fit_bdgf(spec, sar, feat, other[3], va, 3, BDGFConfig(**{**CFG, "epochs": 1}), checkpoint=ckpt)
