"""The workers of one study run: a single process, or the processes of one ``torchrun`` job.

``torchrun --nproc-per-node N -m vitlens bench CFG --out D`` (or ``--nnodes``/``--rdzv-endpoint`` across
machines that share ``D``) starts N processes; each calls :func:`join` and gets a :class:`Workers`. What
torch.distributed does for us: the process group (``gloo`` on CPUs, ``nccl`` with one GPU per local rank) for
the barrier at the end and for gathering the workers' checks and counts, and the rendezvous store (the
``TCPStore`` that the torchrun agent hosts at ``MASTER_ADDR:MASTER_PORT``, or rank 0 where no agent does),
whose atomic ``add`` hands out unit indices: each index goes to exactly one worker, and a fast worker simply
takes more of them.

Fault tolerance: torchrun restarts *all* workers of a job when one dies (``--max-restarts K``). Counter keys
carry the restart count (``TORCHELASTIC_RESTART_COUNT``), so a new round hands out every index again; units
that are already stored are skipped and the unit a killed worker had in hand is computed again (its files are
written atomically, so a half-written unit never counts). Without restarts, rerunning the command resumes.

One process of a run holds an exclusive ``flock`` on ``D/.lock`` (rank 0; the only process of a plain run),
so a second command on the same directory is refused instead of interleaving with the first.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..devices import resolve_device
from ..errors import InputError
from .config import ConfigError

#: how long workers wait for each other (the gather at the end waits for the slowest worker's last unit)
TIMEOUT = datetime.timedelta(hours=float(os.environ.get("VITLENS_DIST_TIMEOUT_HOURS", "72")))
#: how long a worker waits for the rendezvous store and for the others to join the process group
STORE_TIMEOUT = datetime.timedelta(minutes=30)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``run_dir/.lock``, released when the process ends."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / ".lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self.path.read_text().strip() or "another process"
            os.close(self._fd)
            raise ConfigError(
                f"{run_dir} is in use by another vitlens bench ({holder}); wait for it to finish, or use "
                "another run directory"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@dataclass
class Workers:
    """This process's place in the run: ``rank`` of ``world``, its ``device``, and how to coordinate."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    store: Any = None  # torch.distributed.Store in a torchrun job
    prefix: str = "vitlens"
    _next: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def take(self) -> int:
        """The next unit index for this worker (each index to exactly one worker)."""
        if self.store is None:
            self._next += 1
            return self._next - 1
        return int(self.store.add(f"{self.prefix}/next", 1)) - 1

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every worker, in rank order (blocks until all have sent theirs)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def agree(self, problem: str | None) -> None:
        """Every worker states its problem (or None); all raise the first one any worker has."""
        problems = [p for p in self.gather(problem) if p]
        if problems:
            raise ConfigError(problems[0])

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _device_for(requested: str | None, local_rank: int, distributed: bool) -> torch.device:
    dev = resolve_device(requested)
    if dev.type == "cuda" and distributed:
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise InputError(
                f"worker {local_rank} on this machine has no GPU: {n} CUDA device(s) here; start at most {n} "
                "workers per machine (torchrun --nproc-per-node)"
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    return dev


@contextlib.contextmanager
def join(requested_device: str | None) -> Iterator[Workers]:
    """This process's :class:`Workers`: a torchrun worker (process group up, agent store connected) when
    ``WORLD_SIZE`` > 1, else the single worker of a plain run."""
    if not launched_by_torchrun():
        yield Workers(device=_device_for(requested_device, 0, False))
        return
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device_for(requested_device, local_rank, True)
    if device.type == "mps":
        raise InputError("torchrun studies run on CUDA (nccl) or CPU (gloo) workers, not on MPS")
    backend = "nccl" if device.type == "cuda" else "gloo"
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "run")
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    # The agent's store outlives a restart, with the previous round's keys in it (the old workers' addresses
    # among them): the process group and the unit counter of each round get a prefix of their own.
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # else rank 0 hosts the store
    agent_store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size=None if agent_hosts else world,
        is_master=not agent_hosts and rank == 0,
        timeout=STORE_TIMEOUT,
    )
    store = dist.PrefixStore(f"vitlens/{run_id}/{restart}/", agent_store)
    dist.init_process_group(
        backend,
        store=dist.PrefixStore("pg/", store),
        rank=rank,
        world_size=world,
        timeout=TIMEOUT,
        device_id=device if device.type == "cuda" else None,
    )
    workers = Workers(rank, world, local_rank, device, store, "units")
    try:
        yield workers
    finally:
        workers.close()


def worker_info(workers: Workers) -> dict[str, Any]:
    return {
        "rank": workers.rank,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": str(workers.device),
        "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def launch_local(nproc: int, argv: list[str], device: str | None = None) -> int:
    """``vitlens bench --nproc N``: run ``torchrun --standalone --nproc-per-node N -m vitlens <argv>`` on this
    machine and return its exit status. N must fit the machine: at most one worker per GPU on CUDA."""
    import subprocess
    import sys

    if nproc < 1:
        raise InputError(f"--nproc must be >= 1, got {nproc}")
    dev = resolve_device(device)
    if dev.type == "cuda" and nproc > torch.cuda.device_count():
        raise InputError(
            f"--nproc {nproc} needs {nproc} GPUs (one per worker), this machine has {torch.cuda.device_count()}; "
            "use --device cpu for CPU workers"
        )
    if dev.type == "mps":
        raise InputError("--nproc runs CUDA (nccl) or CPU (gloo) workers, not MPS; use --device cpu")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["-m", "vitlens", *argv]
    return subprocess.call(cmd)
