"""Keeping `judge distill`'s processes in step under `torchrun` / `accelerate launch` (DDP).

Every rank runs the whole of distill, so that each joins every transformer's training; what must
not happen twice or differently is handled here:

- **decisions** (the budget's cuts, the winner) are rank 0's, broadcast, since each rank's clock and
  floating point differ a little, and ranks that disagree on a fold count deadlock;
- **files** are written by rank 0 only (`write_meta`, the estimators, the copies), and every rank
  waits at a barrier before it reads what rank 0 wrote or before rank 0 deletes what others read.

Outside a distributed launch (WORLD_SIZE unset or 1) every function here is a no-op.
"""

from __future__ import annotations

import os


def distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main() -> bool:
    """Rank 0, or no distributed launch: the process that writes files and prints."""
    return int(os.environ.get("RANK", "0")) == 0


def start() -> None:
    """Join the process group now (Accelerate's, which the Trainer reuses), so decisions can be shared
    before the first transformer trains."""
    if distributed():
        from accelerate import PartialState

        PartialState()


def wait() -> None:
    """A barrier across ranks (no-op outside a distributed launch)."""
    if distributed():
        import torch.distributed as dist

        dist.barrier()


def shared(value):
    """Rank 0's `value` on every rank (any picklable object)."""
    if not distributed():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
