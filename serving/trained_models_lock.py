"""One writer at a time in the trained-models folder, across the replicas that share it.

A replica's `service.model_lock` orders its own model control, training registrations, deletions and model poll; it
is an asyncio lock, so two replicas (two processes, often two hosts mounting one volume) each held their own and
could, for instance, both register and promote a version of the same model at once: each pinned the version it had
read as served and promoted its own, so the model ended on whichever wrote its policy last, or one put back the
version the other had just promoted. `TrainedModelsLock` is an exclusive `flock` on
`<trained models>/.registry.lock`, taken after the model lock (always in that order, so two replicas never wait on
each other) by what writes a trained model's versions or policy: a training job's registration and promotion, a
promotion or canary call, and the deletion of a version or a model. Inside it the served version is read again, so
of two jobs finishing together the one that takes the lock second registers the higher number, compares itself with
the version the first promoted, and (promoted) is the one served. The model poll only reads and takes no lock.

The lock belongs to the open file: the kernel releases it when its process dies, and two threads (or two lock
objects in one process) exclude each other too. A volume shared between hosts must support `flock` across them
(NFSv4 and CephFS do; a local disk does). The file is never removed and names no model or tenant.
"""

import asyncio
import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_FILE = ".registry.lock"
WAIT_STEP_S = 0.02  # how often a replica waiting for the lock tries again (the event loop stays free meanwhile)


class TrainedModelsLock:
    """`async with TrainedModelsLock(trained_models):` (or `with` in a thread of its own): the exclusive lock.
    `lock_file`: another lock in that folder, for writers that must not wait on this one (the removed models'
    records, `serving.model_versions`)."""

    def __init__(self, trained_models: Path, lock_file: str = LOCK_FILE):
        self.path = trained_models / lock_file
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False (not held) when another holder has it."""
        try:
            fcntl.flock(self._open(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases its lock
            self._fd = None

    def __enter__(self) -> "TrainedModelsLock":
        fcntl.flock(self._open(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> "TrainedModelsLock":
        """Waits without blocking the event loop; a caller cancelled while it waits holds nothing."""
        try:
            while not self.try_acquire():  # a non-blocking call: no thread to outlive a cancelled wait
                await asyncio.sleep(WAIT_STEP_S)
        except BaseException:
            self.release()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
