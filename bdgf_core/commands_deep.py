"""Commands of the deep model (pretrain, train); registered once their stages are in place."""
from __future__ import annotations


def add_deep_commands(sub, common, training_args) -> None:
    return None
