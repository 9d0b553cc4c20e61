"""Running under `accelerate launch` or `torchrun`: one process per GPU, each rendering its share of the plan.

The process group comes from accelerate (which also understands torchrun's environment); it is only created when
the launcher says there are several processes, so a plain `svdrender` run never imports torch.distributed.

Processes meet only at a few collective steps (the lock decision, the barrier after the sweep, the barrier before
the manifest), never while rendering. When another process's machine or process dies, the backend fails at the next
such step (gloo: a RuntimeError once the dead peer's connection closes); that becomes a `PeerLostError`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import PeerLostError
from .shards import Shard


def launched_world_size() -> int:
    """How many processes the launcher started (1 when not launched by accelerate/torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


@dataclass
class ProcessGroup:
    """This process's place in a multi-process render, and the few collective operations svdrender needs."""

    rank: int
    world_size: int
    local_rank: int
    device: str
    _state: Any

    @classmethod
    def from_launcher(cls) -> "ProcessGroup | None":
        """The group accelerate/torchrun set up, or None for a single process."""
        if launched_world_size() <= 1:
            return None
        import torch
        from accelerate import PartialState

        # Without cpu=True accelerate ignores a torchrun launch on a machine with no GPU (gloo is the CPU backend).
        state = PartialState(cpu=not torch.cuda.is_available())
        return cls(rank=state.process_index, world_size=state.num_processes, local_rank=state.local_process_index,
                   device=str(state.device), _state=state)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        return Shard(self.rank + 1, self.world_size)

    @contextmanager
    def _collective(self):
        """Report a peer that is gone as a PeerLostError instead of the backend's traceback."""
        try:
            yield
        except RuntimeError as exc:  # torch.distributed.DistBackendError and gloo's I/O errors are RuntimeErrors
            raise PeerLostError(self.rank, self.world_size) from exc

    def barrier(self) -> None:
        """Wait until every process gets here; PeerLostError if one of them died."""
        with self._collective():
            self._state.wait_for_everyone()

    def broadcast(self, value: Any) -> Any:
        """The main process's `value`, on every process."""
        from accelerate.utils import broadcast_object_list

        holder = [value if self.is_main else None]
        with self._collective():
            broadcast_object_list(holder, from_process=0)
        return holder[0]

    def all_gather(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order."""
        from accelerate.utils import gather_object

        with self._collective():
            return gather_object([value])
