#!/usr/bin/env bash
# The one place that installs the cross toolchain for
# `cargo xtask dist --target aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf`
# and `--all`, on a Debian 12 (bookworm) x86_64 machine, as root, from
# Debian's archive alone. It is idempotent: a second run installs nothing.
#
# The route, and why it is this one:
# - The compiler for the ARM targets is Debian's `rustc-web` (bookworm-security,
#   1.96 today; it installs /usr/bin/rustc), with the ARM standard libraries as
#   Debian multiarch packages `libstd-rust-web-dev:arm64` and `:armhf`. apt
#   keeps the compiler and both standard libraries at exactly the same version
#   (`Multi-Arch: same` and an `=` dependency), so a security update of one
#   moves all of them together and nothing here names a version. No
#   `-Z build-std`, no RUSTC_BOOTSTRAP, no file written into rustup's
#   toolchain. (Building std from source would need Debian's std sources to
#   match rustup's compiler exactly; the archive has `rust-web-src` 1.96 and
#   `rust-src` 1.63, and no 1.95 for the 1.95 toolchain here.)
# - rustup's own toolchain keeps building everything else, the host's static
#   binary included; `cargo xtask dist` points cargo at /usr/bin/rustc only for
#   the two ARM targets (RUSTC), with the cross gcc as the linker.
# - glibc for the ARM targets, linked statically (`+crt-static`), comes from
#   `libc6-dev-arm64-cross` / `libc6-dev-armhf-cross` with the cross gcc.
# - `qemu-user-static` runs the results: `cargo xtask dist` calls
#   qemu-aarch64-static / qemu-arm-static by name; the integration tests
#   (RESIN_LOCK_TEST_BIN=target/dist/aarch64-unknown-linux-gnu/resin-lock)
#   run the binary from shell scripts, setpriv and unshare as well, which
#   needs the kernel's binfmt_misc to hand ARM ELF files to qemu: registered
#   below when the kernel lets us (without systemd nothing else does it).
set -euo pipefail

say() { printf 'cross-setup: %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "cross-setup: run as root (it installs Debian packages)" >&2
    exit 1
fi
if [ "$(dpkg --print-architecture)" != amd64 ]; then
    echo "cross-setup: this is for an amd64 (x86_64) Debian machine; on an ARM" \
        "machine build natively: cargo xtask dist" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
packages=(
    rustc-web libstd-rust-web-dev:arm64 libstd-rust-web-dev:armhf
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
    qemu-user-static file
)

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
    for arch in arm64 armhf; do
        if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
            say "adding the Debian architecture $arch (for libstd-rust-web-dev:$arch)"
            dpkg --add-architecture "$arch"
        fi
    done
    say "apt-get update"
    apt-get update -qq
    say "installing ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "packages already installed: ${packages[*]}"
fi

# binfmt_misc, for the cross test (the dist checks call qemu by name).
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
    mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true
fi
if [ -w "$binfmt/register" ]; then
    for arch in aarch64 arm; do
        if [ -e "$binfmt/qemu-$arch" ]; then
            say "binfmt_misc: qemu-$arch already registered"
        else
            say "binfmt_misc: registering qemu-$arch (/usr/lib/binfmt.d/qemu-$arch.conf)"
            cat "/usr/lib/binfmt.d/qemu-$arch.conf" >"$binfmt/register"
        fi
    done
else
    say "binfmt_misc is not available here: ARM binaries run only as" \
        "qemu-aarch64-static BIN (the dist checks do that; the cross test needs binfmt_misc)"
fi

say "ready: $(/usr/bin/rustc --version) for aarch64 and armv7;" \
    "$(qemu-aarch64-static --version | head -n1)"
