"""The balena update lock for Python, held by the resin-lock binary.

This module never decides anything about the lock. It finds the binary,
starts ``resin-lock hold`` with a pipe on its stdin that it keeps open,
reads the JSON event lines the binary prints (waiting, held, lost, expired,
released), and lets go by closing that pipe. If this process dies, even by
SIGKILL, the kernel closes the pipe and the binary releases the lock.

    import resin_lock

    with resin_lock.lock(reason="flashing firmware") as held:
        flash()                  # held.lost is set if an update was forced
"""

import asyncio
import functools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from typing import (
    IO,
    Any,
    Awaitable,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
    cast,
)

__all__ = [
    "Held",
    "LockBusy",
    "ResinLockError",
    "binary_path",
    "force_update",
    "lock",
    "locked",
    "status",
]

F = TypeVar("F", bound=Callable[..., Any])
PathArg = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]], None]


class ResinLockError(Exception):
    """Any failure of the resin-lock binary: its one line, and its exit status."""

    def __init__(self, message: str, exit_code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        #: The binary's exit status; None when it did not run or was killed.
        self.exit_code = exit_code


class LockBusy(ResinLockError):
    """The lock is held by someone else (``wait=False``, or ``timeout`` passed)."""


def _scripts_dirs() -> List[str]:
    """Where pip puts a wheel's binary: the scripts directory of this
    interpreter's scheme, of the user scheme, and ``bin`` beside the package
    root (``pip install --target``), as ruff's ``__main__`` looks."""
    dirs = [sysconfig.get_path("scripts")]
    if sys.version_info >= (3, 10):
        user_scheme = sysconfig.get_preferred_scheme("user")
    else:
        user_scheme = "posix_user"
    try:
        dirs.append(sysconfig.get_path("scripts", scheme=user_scheme))
    except KeyError:
        pass
    dirs.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin"))
    return [d for d in dirs if d]


def binary_path() -> str:
    """The binary to run: ``RESIN_LOCK_BINARY``, else the wheel's, else
    ``resin-lock`` on PATH; else :class:`ResinLockError` naming the ways."""
    from_env = os.environ.get("RESIN_LOCK_BINARY")
    if from_env:
        return from_env
    exe = "resin-lock" + (sysconfig.get_config_var("EXE") or "")
    for directory in _scripts_dirs():
        candidate = os.path.join(directory, exe)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which(exe)
    if on_path:
        return on_path
    machine = os.uname().machine
    raise ResinLockError(
        "resin-lock: no binary for linux-%s: install the resin-lock wheel for %s "
        "(pip picks it for x86_64, aarch64 and armv7l), or put resin-lock on PATH, "
        "or set RESIN_LOCK_BINARY to its path" % (machine, machine)
    )


def _duration(name: str, seconds: Optional[float]) -> Optional[str]:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise ValueError("resin-lock: %s must be a number of seconds >= 0, not %r" % (name, seconds))
    return "%dms" % round(seconds * 1000)


def _global_args(path: PathArg) -> List[str]:
    if path is None:
        paths: List[Any] = []
    elif isinstance(path, (str, os.PathLike)):
        paths = [path]
    else:
        paths = list(path)
    args: List[str] = []
    for p in paths:
        text = os.fspath(p)
        if not isinstance(text, str) or not text:
            raise ValueError("resin-lock: path must be a path or a list of paths")
        args += ["--path", text]
    return args


def _failure(line: str, code: Optional[int]) -> ResinLockError:
    if code == 1:
        return LockBusy(line or "resin-lock: the lock is held", 1)
    if code is not None and code < 0:
        return ResinLockError(line or "resin-lock: killed by signal %d" % -code, None)
    return ResinLockError(line or "resin-lock: failed (exit status %s)" % code, code)


class Held:
    """A held lock: what ``with resin_lock.lock(...) as held`` gives."""

    def __init__(self) -> None:
        #: The lock files held.
        self.paths: List[str] = []
        #: When the lock was taken (UTC, RFC 3339), as the binary said.
        self.since: Optional[str] = None
        #: Set when the lock is taken from us: a forced update, ``release
        #: --force``, or ``max_hold`` passed. The event that did it is in
        #: :attr:`lost_event`.
        self.lost = threading.Event()
        self.lost_event: Optional[Dict[str, Any]] = None


class lock:  # noqa: N801 - used as a function: ``with resin_lock.lock():``
    """The update lock, held while the ``with`` (or ``async with``) block runs.

    ``wait`` False fails at once with :class:`LockBusy` when the lock is held;
    ``timeout`` (seconds) gives up waiting after that long; ``shared`` lets
    several holders hold it at once; ``reason`` is shown to whoever looks or
    waits; ``max_hold`` (seconds) lets go after that long even if the work
    goes on (``held.lost`` is set); ``path`` names the lock file(s) instead of
    the supervisor's; ``tag`` publishes the hold as a device tag.
    """

    def __init__(
        self,
        wait: bool = True,
        timeout: Optional[float] = None,
        shared: bool = False,
        reason: Optional[str] = None,
        max_hold: Optional[float] = None,
        path: PathArg = None,
        tag: bool = False,
    ) -> None:
        args = _global_args(path) + ["hold"]
        if not wait:
            args.append("-n")
        elif timeout is not None:
            args += ["-w", cast(str, _duration("timeout", timeout))]
        if shared:
            args.append("-s")
        if reason is not None:
            args += ["--reason", str(reason)]
        if max_hold is not None:
            args += ["--max-hold", cast(str, _duration("max_hold", max_hold))]
        if tag:
            args.append("--tag")
        self._args = args
        self._proc: Optional["subprocess.Popen[bytes]"] = None
        self._waiting: Optional["subprocess.Popen[bytes]"] = None
        self._releasing = False
        self._held: Optional[Held] = None
        self._threads: List[threading.Thread] = []

    # -- taking and giving back -------------------------------------------

    def acquire(self) -> Held:
        """Take the lock (waiting as asked); :class:`LockBusy` or
        :class:`ResinLockError` with nothing held."""
        if self._proc is not None:
            raise RuntimeError("resin-lock: this lock is already held; use a new resin_lock.lock()")
        binary = binary_path()
        try:
            proc = subprocess.Popen(
                [binary] + self._args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # Its own session: a Ctrl-C meant for this program does not
                # make the binary let go while the program may still be
                # finishing its work.
                start_new_session=True,
            )
        except OSError as err:
            raise ResinLockError("resin-lock: cannot run %s: %s" % (binary, err)) from None
        self._waiting = proc
        held = Held()
        outcome = threading.Event()
        state: Dict[str, Any] = {"held": False, "pending": [], "last": "", "stderr_lock": threading.Lock()}

        def on_stderr(stream: IO[bytes]) -> None:
            # Lines wait until we know they are not the error message; once
            # the lock is held they pass through to our stderr (the log).
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                with state["stderr_lock"]:
                    if line:
                        state["last"] = line
                    if state["held"]:
                        _write_stderr(line)
                    else:
                        state["pending"].append(line)

        def flush() -> None:
            with state["stderr_lock"]:
                for line in state["pending"]:
                    _write_stderr(line)
                state["pending"] = []

        def on_stdout(stream: IO[bytes]) -> None:
            for raw in stream:
                try:
                    event = json.loads(raw.decode("utf-8", "replace"))
                except ValueError:
                    continue
                kind = event.get("event") if isinstance(event, dict) else None
                if kind == "waiting":
                    flush()
                elif kind == "held":
                    held.paths = list(event.get("paths") or [])
                    held.since = event.get("since")
                    with state["stderr_lock"]:
                        state["held"] = True
                    flush()
                    outcome.set()
                elif kind in ("lost", "expired"):
                    _mark_lost(held, event)
            # stdout closed: the binary is ending.
            outcome.set()

        for target, stream in ((on_stdout, proc.stdout), (on_stderr, proc.stderr)):
            thread = threading.Thread(target=target, args=(stream,), daemon=True, name="resin-lock")
            thread.start()
            self._threads.append(thread)
        try:
            outcome.wait()
        except BaseException:
            # Interrupted while waiting (KeyboardInterrupt): the binary
            # stops waiting and leaves nothing held.
            _stop(proc)
            self._close(proc)
            raise
        finally:
            self._waiting = None
        if not state["held"]:
            code = proc.wait()
            for thread in self._threads:
                thread.join()
            with state["stderr_lock"]:
                said = [line for line in state["pending"] if line]
                state["pending"] = []
            line = said.pop() if said else ""
            for before in said:
                _write_stderr(before)
            self._close(proc)
            raise _failure(line, code)
        self._proc = proc
        self._held = held
        self._state = state
        watcher = threading.Thread(target=self._watch, daemon=True, name="resin-lock-wait")
        watcher.start()
        return held

    def _watch(self) -> None:
        """The binary ending while we hold the lock, unasked, is a loss."""
        proc, held = self._proc, self._held
        if proc is None or held is None:
            return
        code = proc.wait()
        if not self._releasing:
            _mark_lost(held, {"event": "lost", "path": None, "why": "resin-lock hold ended (exit status %s)" % code})

    def release(self) -> None:
        """Let go and wait until the lock file is gone; harmless when not held."""
        proc = self._proc
        if proc is None:
            return
        self._releasing = True
        self._proc = None
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        code = proc.wait()
        for thread in self._threads:
            thread.join()
        self._close(proc)
        held = self._held
        if code != 0 and not (held is not None and held.lost.is_set()):
            raise _failure(self._state["last"], code)

    @staticmethod
    def _close(proc: "subprocess.Popen[bytes]") -> None:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    # -- with, async with, and the decorator --------------------------------

    def __enter__(self) -> Held:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    async def __aenter__(self) -> Held:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self.acquire)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # Cancelled while waiting: stop the binary's wait; if it won the
            # race and holds the lock, let go at once.
            self._cancel_waiting()
            try:
                await future
            except ResinLockError:
                pass
            await loop.run_in_executor(None, self.release)
            raise

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.release)

    def _cancel_waiting(self) -> None:
        proc = self._waiting
        if proc is not None:
            _stop(proc)

    def __call__(self, fn: F) -> F:
        """``@resin_lock.locked(...)`` (or ``@resin_lock.lock(...)``)."""
        args = self._args

        def fresh() -> "lock":
            again = lock.__new__(lock)
            again._args = list(args)
            again._proc = None
            again._waiting = None
            again._releasing = False
            again._held = None
            again._threads = []
            return again

        if asyncio.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*a: Any, **kw: Any) -> Any:
                async with fresh():
                    return await cast(Callable[..., Awaitable[Any]], fn)(*a, **kw)

            return cast(F, run_async)

        @functools.wraps(fn)
        def run(*a: Any, **kw: Any) -> Any:
            with fresh():
                return fn(*a, **kw)

        return cast(F, run)


def locked(
    wait: bool = True,
    timeout: Optional[float] = None,
    shared: bool = False,
    reason: Optional[str] = None,
    max_hold: Optional[float] = None,
    path: PathArg = None,
    tag: bool = False,
) -> Callable[[F], F]:
    """A decorator: the function (or coroutine function) runs holding the lock."""
    return lock(wait=wait, timeout=timeout, shared=shared, reason=reason, max_hold=max_hold, path=path, tag=tag)


def _mark_lost(held: Held, event: Dict[str, Any]) -> None:
    if not held.lost.is_set():
        held.lost_event = event
        held.lost.set()


def _stop(proc: "subprocess.Popen[bytes]") -> None:
    try:
        proc.terminate()
    except OSError:
        pass
    proc.wait()


def _write_stderr(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _run(args: List[str], ok: Tuple[int, ...]) -> str:
    binary = binary_path()
    try:
        done = subprocess.run([binary] + args, stdin=subprocess.DEVNULL, capture_output=True)
    except OSError as err:
        raise ResinLockError("resin-lock: cannot run %s: %s" % (binary, err)) from None
    if done.returncode not in ok:
        said = [line for line in done.stderr.decode("utf-8", "replace").splitlines() if line]
        raise _failure(said[-1] if said else "", done.returncode)
    return done.stdout.decode("utf-8", "replace")


def status(path: PathArg = None) -> Dict[str, Any]:
    """The parsed ``resin-lock status --json`` (a dict)."""
    out = _run(_global_args(path) + ["status", "--json"], (0, 1))
    try:
        return cast(Dict[str, Any], json.loads(out))
    except ValueError as err:
        raise ResinLockError("resin-lock: status --json printed no JSON: %s" % err) from None


def force_update() -> None:
    """Ask the supervisor to update now, overriding update locks."""
    _run(["force-update"], (0,))
