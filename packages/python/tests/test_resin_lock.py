"""The resin_lock package as a user has it: the wheel installed into a new
venv (packages/test.sh), against real lock files and the tools the
supervisor and the host OS use on them."""

import asyncio
import os
import signal
import subprocess
import sys
import sysconfig

import pytest

import resin_lock
from conftest import BOUND_S, npm_lock_sync, reboot_check, supervisor_lockfile, wait_for


def test_installed_from_the_wheel_with_its_binary() -> None:
    venv = sys.prefix
    assert resin_lock.__file__.startswith(venv), "resin_lock is the venv's, not a source tree's"
    os.environ.pop("RESIN_LOCK_BINARY", None)
    found = resin_lock.binary_path()
    assert found == os.path.join(sysconfig.get_path("scripts"), "resin-lock")
    version = subprocess.run([found, "--version"], capture_output=True, text=True)
    assert version.returncode == 0
    assert version.stdout.startswith("resin-lock ")
    package = os.path.dirname(resin_lock.__file__)
    assert os.path.isfile(os.path.join(package, "py.typed"))
    module = subprocess.run([sys.executable, "-m", "resin_lock", "--version"], capture_output=True, text=True)
    assert module.stdout == version.stdout


def test_lookup_order_env_then_wheel_then_path_then_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RESIN_LOCK_BINARY", "/opt/elsewhere/resin-lock")
    assert resin_lock.binary_path() == "/opt/elsewhere/resin-lock"
    monkeypatch.delenv("RESIN_LOCK_BINARY")
    wheel_binary = resin_lock.binary_path()
    # Without the wheel's binary (a source install): PATH, then the error.
    monkeypatch.setattr(resin_lock, "_scripts_dirs", lambda: [str(tmp_path / "none")])
    on_path = tmp_path / "bin"
    on_path.mkdir()
    os.symlink(wheel_binary, str(on_path / "resin-lock"))
    monkeypatch.setenv("PATH", "/nonexistent:%s" % on_path)
    assert resin_lock.binary_path() == str(on_path / "resin-lock")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(resin_lock.ResinLockError) as err:
        resin_lock.binary_path()
    message = str(err.value)
    assert message.startswith("resin-lock: no binary for linux-%s" % os.uname().machine)
    for way in ("wheel", "PATH", "RESIN_LOCK_BINARY"):
        assert way in message


def test_with_holds_exactly_while_the_block_runs(lock_dir) -> None:
    path = os.path.join(lock_dir, "updates.lock")
    with resin_lock.lock(path=path, reason="python test") as held:
        assert held.paths == [path]
        assert os.path.exists(path)
        assert reboot_check(path) == 1, "the host OS reboot check (flock -nx) is blocked"
        assert npm_lock_sync(path) == "EEXIST", "supervisors v7-v12 (npm lockfile) see it held"
        assert supervisor_lockfile(path) != 0, "supervisors v13+ (lockfile -r 0 as 65534) see it held"
        seen = resin_lock.status(path=path)
        assert seen["locked"] is True
        lock = seen["locks"][0]
        assert lock["path"] == path and lock["held_by"] == "resin-lock"
        assert lock["record"]["mode"] == "hold"
        assert lock["record"]["owner"] == os.getpid(), "the owner is this program"
        assert lock["record"].get("reason") == "python test"
        assert not held.lost.is_set()
    assert not os.path.exists(path)
    assert resin_lock.status(path=path)["locked"] is False


def test_with_releases_when_the_block_raises(lock_dir) -> None:
    path = os.path.join(lock_dir, "updates.lock")
    with pytest.raises(ZeroDivisionError):
        with resin_lock.lock(path=path):
            assert os.path.exists(path)
            1 / 0
    assert not os.path.exists(path)


def test_busy_and_timeout_raise_lock_busy(lock_dir) -> None:
    path = os.path.join(lock_dir, "updates.lock")
    with resin_lock.lock(path=path):
        with pytest.raises(resin_lock.LockBusy) as busy:
            with resin_lock.lock(path=path, wait=False):
                pytest.fail("taken twice")
        assert isinstance(busy.value, resin_lock.ResinLockError)
        assert busy.value.exit_code == 1
        assert str(busy.value).startswith("resin-lock: ") and "\n" not in str(busy.value)
        with pytest.raises(resin_lock.LockBusy):
            with resin_lock.lock(path=path, timeout=0.2):
                pytest.fail("taken twice")
    assert not os.path.exists(path)


def test_npm_lockfile_holder_then_taken_once_it_lets_go(lock_dir) -> None:
    path = os.path.join(lock_dir, "updates.lock")
    script = os.path.join(os.environ["RESIN_LOCK_TEST_NPM_LOCKFILE"], "locksync.js")
    holder = subprocess.Popen(["node", script, path, "hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == b"locked"
    with pytest.raises(resin_lock.LockBusy):
        resin_lock.lock(path=path, wait=False).acquire()
    holder.stdin.close()  # the supervisor's process lets go while we wait
    with resin_lock.lock(path=path, timeout=BOUND_S):
        assert os.path.exists(path)
    holder.wait()
    assert not os.path.exists(path)


def test_supervisor_lock_times_out_and_is_left_alone(lock_dir) -> None:
    path = os.path.join(lock_dir, "updates.lock")
    assert supervisor_lockfile(path) == 0
    with pytest.raises(resin_lock.LockBusy) as busy:
        with resin_lock.lock(path=path, timeout=0.3):
            pytest.fail("took the supervisor's lock")
    assert busy.value.exit_code == 1
    assert os.stat(path).st_uid == 65534
    os.unlink(path)


def test_forced_update_sets_lost(lock_dir) -> None:
    path = os.path.join(lock_dir, "updates.lock")
    with resin_lock.lock(path=path) as held:
        os.unlink(path)
        assert supervisor_lockfile(path) == 0
        assert held.lost.wait(BOUND_S), "lost is set after a forced update"
        assert held.lost_event is not None and held.lost_event["event"] == "lost"
        assert held.lost_event["path"] == path
    assert os.stat(path).st_uid == 65534, "release leaves the supervisor's new lock alone"
    os.unlink(path)


def test_max_hold_lets_go_and_sets_lost(lock_dir) -> None:
    path = os.path.join(lock_dir, "updates.lock")
    with resin_lock.lock(path=path, max_hold=0.3) as held:
        assert held.lost.wait(BOUND_S)
        assert held.lost_event is not None and held.lost_event["event"] == "expired"
        wait_for(lock_dir, lambda: not os.path.exists(path), "the lock file gone after max_hold")


def test_shared_holders(lock_dir) -> None:
    path = os.path.join(lock_dir, "updates.lock")
    with resin_lock.lock(path=path, shared=True):
        with resin_lock.lock(path=path, shared=True, wait=False):
            with pytest.raises(resin_lock.LockBusy):
                resin_lock.lock(path=path, wait=False).acquire()
            assert reboot_check(path) == 1
        assert os.path.exists(path), "the last shared holder out removes it"
    assert not os.path.exists(path)


def test_decorator_and_async(lock_dir) -> None:
    path = os.path.join(lock_dir, "updates.lock")

    @resin_lock.locked(path=path)
    def work(x: int) -> int:
        assert os.path.exists(path)
        return x * 2

    assert work(21) == 42
    assert work(1) == 2, "the decorator takes the lock afresh on every call"
    assert not os.path.exists(path)

    @resin_lock.locked(path=path, reason="async")
    async def async_work() -> str:
        assert os.path.exists(path)
        return "done"

    async def main() -> None:
        async with resin_lock.lock(path=path) as held:
            assert held.paths == [path]
            assert os.path.exists(path)
            # The event loop stays free while the lock is held.
            await asyncio.sleep(0)
        assert not os.path.exists(path)
        assert await async_work() == "done"

    asyncio.run(main())
    assert not os.path.exists(path)


def test_sigkill_of_the_python_process_frees_the_lock(lock_dir) -> None:
    path = os.path.join(lock_dir, "updates.lock")
    program = (
        "import resin_lock, sys, time\n"
        "with resin_lock.lock(path=%r):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(3600)\n" % path
    )
    child = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"held"
    assert os.path.exists(path)
    child.send_signal(signal.SIGKILL)
    child.wait()
    wait_for(lock_dir, lambda: not os.path.exists(path), "the lock file gone after SIGKILL of its Python holder")


def test_errors_carry_the_exit_status(monkeypatch) -> None:
    with pytest.raises(resin_lock.ResinLockError) as bad:
        with resin_lock.lock(path="/nonexistent-resin-lock-dir/updates.lock"):
            pytest.fail("held a lock in a missing directory")
    assert not isinstance(bad.value, resin_lock.LockBusy)
    assert bad.value.exit_code == 73
    assert "nonexistent-resin-lock-dir" in str(bad.value)
    for name in list(os.environ):
        if name.endswith(("SUPERVISOR_ADDRESS", "SUPERVISOR_API_KEY")):
            monkeypatch.delenv(name)
    with pytest.raises(resin_lock.ResinLockError) as none:
        resin_lock.force_update()
    assert none.value.exit_code == 69
    with pytest.raises(ValueError):
        resin_lock.lock(timeout=-1)
