"""Helpers for the tests of the installed resin_lock package (packages/test.sh
installs the wheel into a new venv and runs these from a copy, so that
``import resin_lock`` is the wheel's)."""

import ctypes
import os
import select
import subprocess
import tempfile
import time
from typing import Callable

import pytest

#: Generous: the machine may be loaded. Never a time the tests assert.
BOUND_S = 10.0


@pytest.fixture
def lock_dir() -> str:
    """A fresh lock directory, world-writable and sticky like the supervisor's."""
    base = os.environ.get("RESIN_LOCK_TEST_TMP") or tempfile.gettempdir()
    path = tempfile.mkdtemp(prefix="py-", dir=base)
    os.chmod(path, 0o1777)
    return path


def wait_for(directory: str, check: Callable[[], bool], what: str) -> None:
    """Return once ``check()`` holds, re-checked on every change in
    ``directory`` (inotify, through libc: the standard library has none);
    fail after BOUND_S."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    try:
        # IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
        if libc.inotify_add_watch(fd, os.fsencode(directory), 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch %s" % directory)
        deadline = time.monotonic() + BOUND_S
        while not check():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("not within %.0f s: %s" % (BOUND_S, what))
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                os.read(fd, 65536)
    finally:
        os.close(fd)


def reboot_check(path: str) -> int:
    """balenaOS safe_reboot's check: ``flock -nx`` on a read fd; 0 = it would reboot."""
    return subprocess.run(["sh", "-c", 'exec 3<"$1" && flock -nx 3', "sh", path]).returncode


def supervisor_lockfile(path: str) -> int:
    """Supervisor v13+: ``lockfile -r 0`` as uid 65534."""
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "lockfile", "-r", "0", path],
        stderr=subprocess.DEVNULL,
    ).returncode


def npm_lock_sync(path: str) -> str:
    """Supervisor v7 to v12: the npm lockfile package's lockSync."""
    script = os.path.join(os.environ["RESIN_LOCK_TEST_NPM_LOCKFILE"], "locksync.js")
    return subprocess.run(["node", script, path], capture_output=True, text=True).stdout.strip()
