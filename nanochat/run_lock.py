"""One run at a time per output directory.

`RunLock(directory)` holds an advisory lock (fcntl.flock on `directory/.lock`) for the run's
duration and writes the holder's pid and host into the lock file, so a second run into the same
directory is refused with a message naming the first. The kernel drops the lock when its holder
dies, however it dies, so a lock is never stale. Whoever takes the lock is the only writer, so it
removes what a dead writer left behind: temporary files of an interrupted save, and weight files
whose meta (written last) never appeared.
"""
import fcntl
import os
import re
import socket
import time
from pathlib import Path

LOCK_FILE = ".lock"
# write_atomic's temporary names (".model_000100.safetensors.k2j3.tmp") and the weight files of a step
_TEMP = re.compile(r"\..+\.tmp")
_WEIGHTS = re.compile(r"(?:model|optim)_(\d+)\.safetensors")


class RunLock:
    def __init__(self, directory):
        self.directory = Path(directory)
        self._fd = None

    def __enter__(self):
        d = self.directory
        if d.exists() and not d.is_dir():
            raise ValueError(f"{d} exists and is not a directory")
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ValueError(f"{d} is in use by another run ({holder}); wait for it to end or choose "
                             "another output directory") from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n".encode(), 0)
        self._fd = fd
        removed = remove_leftovers(d)
        if removed:
            print(f"removed {len(removed)} file(s) of an interrupted save in {d}: {', '.join(sorted(removed))}")
        return self

    def __exit__(self, *exc):
        os.ftruncate(self._fd, 0)  # no holder named once the run is over
        os.close(self._fd)  # releases the lock
        self._fd = None


def remove_leftovers(directory):
    """Delete the temporary files and meta-less weight files of saves that never finished; call
    only while holding the lock. Returns the names removed."""
    directory = Path(directory)
    removed = []
    for p in directory.iterdir():
        weights = _WEIGHTS.fullmatch(p.name)
        orphan = weights and not (directory / f"meta_{weights.group(1)}.json").exists()
        if p.is_file() and (_TEMP.fullmatch(p.name) or orphan):
            p.unlink()
            removed.append(p.name)
    return removed
