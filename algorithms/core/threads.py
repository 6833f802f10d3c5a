"""CPU thread control. Small-batch inference (evaluation, data collection) gains nothing from several threads and,
on a machine whose other cores are busy, torch's thread pool can make it tens of times slower."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
