"""Checkpoints: written atomically, read back with a clear error when corrupt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import atomic_torch_save


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    atomic_torch_save(path, payload)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise CtrlbenchError(
            f"checkpoint {path} cannot be read ({type(e).__name__}); delete it to start over") from None
