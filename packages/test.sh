#!/usr/bin/env bash
# Test the npm and PyPI packages as users install them, offline, from the
# files `cargo xtask dist --all` wrote to target/dist:
#
# - the artifacts themselves (pytest packages/python/tests/test_artifacts.py):
#   tags, sizes, os/cpu, each binary the checked one, of the right ELF
#   machine, and running (under qemu-user for ARM);
# - npm: a new project, `npm install --offline` of the main tarball and this
#   machine's per-arch one, then `node --test`;
# - PyPI: a new venv, `pip install --no-index` of this machine's wheel, then
#   pytest.
#
# The npm `lockfile` package that supervisors v7 to v12 used comes from the
# registry (`npm ci` of tests/fixtures/npm), as `cargo test` provisions it.
# Run as root (the tests take the supervisor's uid 65534 with setpriv).
# The last lines are the runners' summaries.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dist=${RESIN_LOCK_DIST:-$root/target/dist}
python=${PYTHON:-python3}

case $(uname -m) in
x86_64) npm_arch=x64 wheel_arch=x86_64 ;;
aarch64) npm_arch=arm64 wheel_arch=aarch64 ;;
armv7l | armv8l) npm_arch=arm wheel_arch=armv7l ;;
*)
    echo "packages/test.sh: no package is made for $(uname -m)" >&2
    exit 1
    ;;
esac
main_tgz=$(ls "$dist"/npm/resin-lock-[0-9]*.tgz 2>/dev/null || true)
arch_tgz=$(ls "$dist"/npm/resin-lock-linux-"$npm_arch"-[0-9]*.tgz 2>/dev/null || true)
wheel=$(ls "$dist"/wheels/resin_lock-*_"$wheel_arch".whl 2>/dev/null || true)
if [ -z "$main_tgz" ] || [ -z "$arch_tgz" ] || [ -z "$wheel" ]; then
    echo "packages/test.sh: no packages in $dist; run \`cargo xtask dist --all\` first" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/resin-lock-packages.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The tests' lock dirs live here; uid 65534 must reach them.
chmod 755 "$work"
mkdir -m 755 "$work/tmp"
export RESIN_LOCK_TEST_TMP=$work/tmp RESIN_LOCK_DIST=$dist
unset RESIN_LOCK_BINARY

echo "packages: the npm lockfile package (supervisors v7-v12), npm ci of tests/fixtures/npm"
mkdir "$work/npm-lockfile"
cp "$root"/tests/fixtures/npm/package.json "$root"/tests/fixtures/npm/package-lock.json \
    "$root"/tests/fixtures/npm/*.js "$work/npm-lockfile/"
(cd "$work/npm-lockfile" && npm ci --silent --no-audit --no-fund)
export RESIN_LOCK_TEST_NPM_LOCKFILE=$work/npm-lockfile

echo "packages: npm install --offline $(basename "$main_tgz") $(basename "$arch_tgz")"
mkdir -p "$work/node/test"
cd "$work/node"
echo '{ "name": "a-balena-app", "private": true }' >package.json
npm install --offline --no-audit --no-fund "$main_tgz" "$arch_tgz"
cp "$root"/packages/npm/test/*.test.mjs test/

echo "packages: pip install --no-index $(basename "$wheel")"
# pytest comes from the interpreter the venv is made from; resin_lock only
# from the wheel.
"$python" -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --no-index --no-deps "$wheel"
cp -r "$root/packages/python/tests" "$work/py"

status=0
echo "packages: node --test"
node --test test/ 2>&1 | tee "$work/node.log" || status=1
echo "packages: pytest"
cd "$work/py"
"$work/venv/bin/python" -m pytest -p no:cacheprovider -q -rs . 2>&1 | tee "$work/py.log" || status=1
echo "packages: the runners' summaries, node --test then pytest:"
grep -E '^# (tests|pass|fail) ' "$work/node.log"
tail -n 1 "$work/py.log"
exit $status
