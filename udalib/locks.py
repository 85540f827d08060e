"""Folder locks and atomic files: two processes never write the same run folder or dataset build.

A lock is ``flock`` on a lock file (the ``filelock`` package), so the kernel drops it when its process dies: a
lock of a killed process is never stale. Beside it, ``<lock>.owner`` records who holds it (pid, host, start
time, command) for the message the second process prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout


class FolderBusyError(RuntimeError):
    """Another live process holds the folder's lock."""


def unique_tmp(path: str | os.PathLike) -> Path:
    """A temporary name beside ``path``, unique per process and call: ``.<name>.<pid>-<random>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a unique temporary file, flush it to disk, then rename it over ``path``."""
    path = Path(path)
    tmp = unique_tmp(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.*.tmp``, ``*.tmp``, ``.*.tmp<pid>``) a killed writer left in ``folder``.

    Call it only while holding the folder's lock: then no live writer owns any of them."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        name = p.name
        if p.is_file() and (name.endswith(".tmp") or (name.startswith(".") and ".tmp" in name)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _owner_text() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "command": " ".join(sys.argv)[:200]})


def describe_owner(lock_path: str | os.PathLike) -> str:
    """``process 1234 on host (since ..., `cmd`)`` from the owner file, or ``another process``."""
    try:
        owner = json.loads(Path(str(lock_path) + ".owner").read_text())
        return (f"process {owner['pid']} on {owner['host']} (since {owner['since']}"
                + (f", `{owner['command']}`" if owner.get("command") else "") + ")")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def hold(lock_path: str | os.PathLike, *, what: str, wait: float = 0, hint: str = "",
         on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock ``lock_path`` for the ``with`` block.

    ``wait=0``: if another process holds it, raise :class:`FolderBusyError` naming it; ``wait>0``: wait up to
    that many seconds (``on_wait(owner)`` is called once first), then raise. ``hint`` ends the message.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), preserve_lock_file=True, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = describe_owner(lock_path)
        for _ in range(20):  # the holder writes its owner file just after taking the lock: give it a moment
            if owner != "another process":
                break
            time.sleep(0.05)
            owner = describe_owner(lock_path)
        if wait <= 0:
            raise FolderBusyError(f"{what} is in use by {owner}{': ' + hint if hint else ''}") from None
        if on_wait is not None:
            on_wait(owner)
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise FolderBusyError(f"{what} is still in use by {owner} after {wait:.0f} s"
                                  f"{': ' + hint if hint else ''}") from None
    owner_file = Path(str(lock_path) + ".owner")
    try:
        atomic_write_text(owner_file, _owner_text())
        yield
    finally:
        owner_file.unlink(missing_ok=True)
        lock.release()


def append_csv_row(path: str | os.PathLike, row: dict, fieldnames) -> None:
    """Append one row to the CSV at ``path`` under its lock file (``<name>.lock``), so that benchmark shards may
    write the same file; the header goes with the first row. A row with a key outside ``fieldnames`` is an error
    (``csv.DictWriter``), so a renamed column cannot be written silently."""
    import csv

    path = Path(path)
    with hold(path.with_name(path.name + ".lock"), what=str(path), wait=60):
        new = not path.is_file() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(fieldnames))
            if new:
                writer.writeheader()
            writer.writerow(row)
