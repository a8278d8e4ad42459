"""How much memory a network's forward pass holds, measured by running it once on a small input.

Classification sizes its batches and blocks from a memory budget, and a network's working memory
depends on its layers (and on other modules' implementation details), so it is measured rather
than guessed: :func:`module_output_bytes` runs a function with a forward hook on every module of
the network and adds up the bytes of every tensor storage the modules return (each storage once).
That is a bound at module granularity, as if every layer's output were alive at once: measured
here it is 1.5-2x the resident memory a batch really adds (docs/bench/classify.md), and it misses
only temporaries that live and die inside one module's ``forward``.

(A TorchDispatchMode that follows the storages' lifetimes would be exact, but entering the first
one imports about 800 modules of torch, some 70 MB: more than the budgets this is for.)
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


def module_output_bytes(fn: Callable[[], Any]) -> int:
    """Run ``fn()`` once; the bytes of the distinct storages returned by the modules it calls."""
    # The storages are kept alive until the end: a freed one's address could be reused by a later
    # output, which would then go uncounted (the measure varied from run to run before).
    seen: dict[int, Any] = {}
    total = 0

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        stack = [output]
        while stack:
            o = stack.pop()
            if isinstance(o, (tuple, list)):
                stack.extend(o)
            elif isinstance(o, dict):
                stack.extend(o.values())
            elif isinstance(o, torch.Tensor):
                st = o.untyped_storage()
                if st.data_ptr() not in seen:
                    seen[st.data_ptr()] = st
                    total += st.nbytes()
            elif hasattr(o, "__dataclass_fields__"):
                stack.extend(getattr(o, f) for f in o.__dataclass_fields__)

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        fn()
    finally:
        handle.remove()
        seen.clear()
    return total
