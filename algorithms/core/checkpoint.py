"""Checkpoints: written atomically, read back with a clear error when corrupt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from algorithms.core.errors import CtrlbenchError
from algorithms.core.io import atomic_torch_save

FIX = "delete it (or move it away) to start the run over"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    atomic_torch_save(path, payload)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's payload; a truncated, foreign or unreadable file is a one-line error that says what to do."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: torch raises RuntimeError, UnpicklingError, EOFError...
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise CtrlbenchError(f"checkpoint {path} cannot be read ({type(e).__name__}{': ' + first if first else ''}); "
                             f"it is truncated or not a ctrlbench checkpoint: {FIX}") from None
    if not isinstance(state, dict) or not isinstance(state.get("algorithm"), dict):
        raise CtrlbenchError(f"checkpoint {path} is not a ctrlbench checkpoint (no algorithm state); {FIX}")
    return state
