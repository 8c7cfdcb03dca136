"""The files `cargo xtask dist --all` wrote, as the registries would take
them: each wheel's tags and each npm package's os/cpu, at most 1 MiB each,
each carrying the binary that dist checked (SHA256SUMS), of the right ELF
machine, and running (under qemu-user for ARM)."""

import hashlib
import io
import json
import os
import struct
import subprocess
import tarfile
import zipfile
from typing import Dict, Tuple

import pytest

DIST = os.environ.get("RESIN_LOCK_DIST", "")
MAX_PACKAGE = 1024 * 1024

# triple: (npm process.arch, wheel machine, ELF e_machine, ELF class bits, qemu-user or None)
ARCHES = {
    "x86_64-unknown-linux-gnu": ("x64", "x86_64", 62, 64, "qemu-x86_64-static"),
    "aarch64-unknown-linux-gnu": ("arm64", "aarch64", 183, 64, "qemu-aarch64-static"),
    "armv7-unknown-linux-gnueabihf": ("arm", "armv7l", 40, 32, "qemu-arm-static"),
}

pytestmark = pytest.mark.skipif(not DIST, reason="RESIN_LOCK_DIST is not set (packages/test.sh sets it)")


def sums() -> Dict[str, str]:
    """target/dist/SHA256SUMS: triple -> sha256 of the checked binary."""
    found = {}
    with open(os.path.join(DIST, "SHA256SUMS")) as f:
        for line in f:
            digest, name = line.split()
            found[name.split("/")[0]] = digest
    return found


def version() -> str:
    names = [n for n in os.listdir(os.path.join(DIST, "npm")) if n.startswith("resin-lock-") and n[11].isdigit()]
    assert len(names) == 1, names
    return names[0][len("resin-lock-") : -len(".tgz")]


def elf_machine(data: bytes) -> Tuple[int, int, bool]:
    """(e_machine, class bits, has a PT_INTERP) of an ELF image."""
    assert data[:4] == b"\x7fELF"
    bits = 64 if data[4] == 2 else 32
    (machine,) = struct.unpack_from("<H", data, 18)
    if bits == 64:
        phoff, = struct.unpack_from("<Q", data, 32)
        phentsize, phnum = struct.unpack_from("<HH", data, 54)
    else:
        phoff, = struct.unpack_from("<I", data, 28)
        phentsize, phnum = struct.unpack_from("<HH", data, 42)
    interp = any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum))
    return machine, bits, interp


def runs(binary: bytes, qemu: str, tmp_path) -> str:
    """`--version` of the binary, under qemu-user unless it is this machine's;
    and `hold` takes a lock and lets go when its stdin closes, as the
    packages drive it."""
    path = tmp_path / "resin-lock"
    path.write_bytes(binary)
    path.chmod(0o755)
    native = subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip()
    runner = [] if qemu.startswith("qemu-%s" % native.replace("armv7l", "arm")) else [qemu]
    done = subprocess.run(runner + [str(path), "--version"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lock = tmp_path / "updates.lock"
    hold = subprocess.Popen(
        runner + [str(path), "--path", str(lock), "hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert hold.stdin is not None and hold.stdout is not None
    held = json.loads(hold.stdout.readline())
    assert held["event"] == "held" and held["paths"] == [str(lock)]
    assert lock.exists()
    hold.stdin.close()
    assert json.loads(hold.stdout.readline()) == {"event": "released"}
    assert hold.wait() == 0
    assert not lock.exists()
    return done.stdout.strip()


@pytest.mark.parametrize("triple", sorted(ARCHES))
def test_wheel(triple, tmp_path) -> None:
    _, machine_name, machine, bits, qemu = ARCHES[triple]
    v = version()
    tags = "manylinux_2_17_{m}.manylinux2014_{m}.musllinux_1_1_{m}".format(m=machine_name)
    name = "resin_lock-%s-py3-none-%s.whl" % (v, tags)
    path = os.path.join(DIST, "wheels", name)
    assert os.path.isfile(path), "%s in %s" % (name, os.listdir(os.path.join(DIST, "wheels")))
    assert os.path.getsize(path) <= MAX_PACKAGE
    with zipfile.ZipFile(path) as wheel:
        info = wheel.read("resin_lock-%s.dist-info/WHEEL" % v).decode()
        declared = {line.split(": ", 1)[1] for line in info.splitlines() if line.startswith("Tag: ")}
        assert declared == {"py3-none-" + t for t in tags.split(".")}
        names = wheel.namelist()
        assert "resin_lock/__init__.py" in names and "resin_lock/py.typed" in names
        member = "resin_lock-%s.data/scripts/resin-lock" % v
        binary = wheel.read(member)
        mode = wheel.getinfo(member).external_attr >> 16
        assert mode & 0o111, "the binary is executable"
        metadata = wheel.read("resin_lock-%s.dist-info/METADATA" % v).decode()
        assert "Requires-Python: >=3.8" in metadata
    assert hashlib.sha256(binary).hexdigest() == sums()[triple], "the binary dist checked"
    assert elf_machine(binary) == (machine, bits, False)
    assert runs(binary, qemu, tmp_path) == "resin-lock %s" % v


@pytest.mark.parametrize("triple", sorted(ARCHES))
def test_npm_per_arch_package(triple, tmp_path) -> None:
    npm_arch, _, machine, bits, qemu = ARCHES[triple]
    v = version()
    path = os.path.join(DIST, "npm", "resin-lock-linux-%s-%s.tgz" % (npm_arch, v))
    assert os.path.getsize(path) <= MAX_PACKAGE
    with tarfile.open(path) as tgz:
        package = json.load(io.TextIOWrapper(tgz.extractfile("package/package.json")))
        member = tgz.getmember("package/bin/resin-lock")
        binary = tgz.extractfile(member).read()
    assert package["name"] == "@resin-lock/linux-%s" % npm_arch
    assert package["version"] == v
    assert package["os"] == ["linux"] and package["cpu"] == [npm_arch]
    assert member.mode & 0o111, "the binary is executable"
    assert hashlib.sha256(binary).hexdigest() == sums()[triple], "the binary dist checked"
    assert elf_machine(binary) == (machine, bits, False)
    assert runs(binary, qemu, tmp_path) == "resin-lock %s" % v


def test_npm_main_package() -> None:
    v = version()
    with tarfile.open(os.path.join(DIST, "npm", "resin-lock-%s.tgz" % v)) as tgz:
        package = json.load(io.TextIOWrapper(tgz.extractfile("package/package.json")))
        names = set(tgz.getnames())
    assert {"package/index.js", "package/index.mjs", "package/index.d.ts", "package/README.md"} <= names
    assert not package.get("dependencies"), "no runtime dependencies"
    assert package["optionalDependencies"] == {
        "@resin-lock/linux-%s" % arch[0]: v for arch in ARCHES.values()
    }
    assert package["exports"]["."]["import"] == "./index.mjs"
    assert package["exports"]["."]["require"] == "./index.js"


def test_dist_holds_only_the_shipped_files() -> None:
    found = set()
    for parent, dirs, files in os.walk(DIST):
        for f in files:
            found.add(os.path.relpath(os.path.join(parent, f), DIST))
    wanted = {"SHA256SUMS", "resin-lock"} | {"%s/resin-lock" % t for t in ARCHES}
    extra = {f for f in found - wanted if not f.startswith(("npm/", "wheels/"))}
    assert not extra, "target/dist holds %d files more than the shipped ones, e.g. %s" % (
        len(extra),
        ", ".join(sorted(extra)[:5]),
    )
