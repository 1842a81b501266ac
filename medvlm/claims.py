"""One run per output directory: a lock file naming its holder.

Two trainings writing one output directory at once interleave their logs, overwrite each other's
recipe and model and trip over each other's checkpoint staging. A run therefore claims its
directory with :data:`LOCK_FILE`, created exclusively and holding the claimant's PID, host and start
time; a second run gets an :class:`~medvlm.errors.OutputError` naming the holder. A lock whose PID
is dead on this host (a killed run) is taken over; a lock from another host is never guessed stale.
Takeovers are serialised (an exclusive ``flock`` on the directory) and remove the lock only if it
still holds the dead run's record: two runs finding the same stale lock cannot both end up holding
the directory.

In a distributed run only the main process (``RANK`` 0) claims: every process of the run writes
the same directory by design.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medvlm.distributed import is_main_process
from medvlm.errors import OutputError
from medvlm.io import LOCK_FILE, held_by_this_process, holder_may_run, read_lock

log = logging.getLogger("medvlm")

_held: dict[Path, int] = {}  # directories this process holds, with a re-entry count
_created: set[Path] = set()  # ... of which the claim created the directory itself


def _create(lock: Path) -> bool:
    """Create the lock file exclusively with this process as holder; False if it already exists."""
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    return True


@contextmanager
def _takeovers_serialised(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (released with the descriptor, even if the process dies)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _take_over(lock: Path, stale: dict) -> bool:
    """Remove ``lock`` if it still names the dead holder ``stale``; False if another run took it meanwhile."""
    with _takeovers_serialised(lock.parent):
        if read_lock(lock) != stale:
            return False
        lock.unlink(missing_ok=True)
        return True


def acquire(directory: str | os.PathLike) -> None:
    """Claim ``directory`` for this process (creating it); a second claim by the holder is counted."""
    directory = Path(directory).resolve()
    if directory in _held:
        _held[directory] += 1
        return
    if not directory.exists():
        _created.add(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{directory}: cannot be created: it or one of its parents is a file, not a "
                          "directory; choose another output directory") from None
    lock = directory / LOCK_FILE
    for _ in range(3):  # a stale lock removed by us (or another taker) between the checks: try again
        if _create(lock):
            _held[directory] = 1
            return
        holder = read_lock(lock)
        pid, host = holder.get("pid"), holder.get("host")
        if held_by_this_process(holder):
            # our own lock left by an earlier claim in this process that did not release (an exception
            # path); it is ours to reuse
            _held[directory] = 1
            return
        if isinstance(pid, int) and not holder_may_run(holder):
            if _take_over(lock, holder):
                log.warning("%s: taking over the lock of a run that is gone (pid %d on %s)", directory, pid, host)
            continue  # ours to create now, or another taker's: the next look says which
        if not holder and not lock.exists():
            continue
        since = f" since {holder['started']}" if holder.get("started") else ""
        raise OutputError(f"{directory}: in use by another medvlm run (pid {pid} on host {host}{since}); wait "
                          f"for it to finish or choose another output directory (if that process is gone, "
                          f"delete {lock})")
    raise OutputError(f"{directory}: could not claim {lock}; another run keeps taking it")


def release(directory: str | os.PathLike) -> None:
    directory = Path(directory).resolve()
    count = _held.get(directory, 0)
    if count > 1:
        _held[directory] = count - 1
        return
    _held.pop(directory, None)
    lock = directory / LOCK_FILE
    if held_by_this_process(read_lock(lock)):
        lock.unlink(missing_ok=True)
    if directory in _created:  # a run refused before writing anything leaves no empty directory behind
        _created.discard(directory)
        try:
            directory.rmdir()
        except OSError:
            pass  # not empty: the run wrote its outputs


@contextmanager
def claim(directory: str | os.PathLike) -> Iterator[Path]:
    """Hold ``directory``'s lock for the duration (main process only; re-entrant within a process)."""
    directory = Path(directory)
    if not is_main_process():
        yield directory
        return
    acquire(directory)
    try:
        yield directory
    finally:
        release(directory)
