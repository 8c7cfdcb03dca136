#!/usr/bin/env bash
# How long the packages add around a critical section, beside the command
# line's `resin-lock run -- true`: the time from the `withLock` / `with` call
# to the function's start, and from its end to the lock file being gone,
# medians of N rounds (default 50), Node and Python, from the packages of
# target/dist installed offline as packages/test.sh installs them.
# A measurement, not a test: run it on a quiet machine for figures.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dist=${RESIN_LOCK_DIST:-$root/target/dist}
rounds=${1:-50}
case $(uname -m) in
x86_64) npm_arch=x64 wheel_arch=x86_64 ;;
aarch64) npm_arch=arm64 wheel_arch=aarch64 ;;
*) npm_arch=arm wheel_arch=armv7l ;;
esac
work=$(mktemp -d "${TMPDIR:-/tmp}/resin-lock-measure.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/node" "$work/locks"
(cd "$work/node" && echo '{ "name": "measure", "private": true }' >package.json &&
    npm install --silent --offline --no-audit --no-fund "$dist"/npm/resin-lock-[0-9]*.tgz \
        "$dist"/npm/resin-lock-linux-"$npm_arch"-*.tgz)
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --no-index --no-deps "$dist"/wheels/resin_lock-*_"$wheel_arch".whl
lock=$work/locks/updates.lock
unset RESIN_LOCK_BINARY

(cd "$work/node" && node - "$lock" "$rounds" <<'EOF')
const { withLock } = require('resin-lock');
const fs = require('fs');
const [lock, rounds] = [process.argv[2], Number(process.argv[3])];
const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
(async () => {
  const start = [], end = [];
  for (let i = 0; i < rounds; i++) {
    let t1, t2;
    const t0 = process.hrtime.bigint();
    await withLock(() => { t1 = process.hrtime.bigint(); t2 = process.hrtime.bigint(); }, { path: lock });
    const t3 = process.hrtime.bigint();
    if (fs.existsSync(lock)) throw new Error('the lock file is still there');
    start.push(Number(t1 - t0) / 1e6);
    end.push(Number(t3 - t2) / 1e6);
  }
  console.log(`node:   withLock call -> fn start ${median(start).toFixed(2)} ms, fn end -> file gone ${median(end).toFixed(2)} ms (median of ${rounds})`);
})();
EOF

"$work/venv/bin/python" - "$lock" "$rounds" <<'EOF'
import os, sys, time, statistics
import resin_lock
lock, rounds = sys.argv[1], int(sys.argv[2])
start, end = [], []
for _ in range(rounds):
    t0 = time.perf_counter()
    with resin_lock.lock(path=lock):
        t1 = time.perf_counter()
    t3 = time.perf_counter()
    assert not os.path.exists(lock), "the lock file is still there"
    start.append((t1 - t0) * 1e3)
    end.append((t3 - t1) * 1e3)
print("python: with call -> block start %.2f ms, block end -> file gone %.2f ms (median of %d)"
      % (statistics.median(start), statistics.median(end), rounds))
EOF

bin=$work/venv/bin/resin-lock
"$work/venv/bin/python" - "$bin" "$lock" "$rounds" <<'EOF'
import subprocess, sys, time, statistics
binary, lock, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
walls = []
for _ in range(rounds):
    t0 = time.perf_counter()
    subprocess.run([binary, "--path", lock, "run", "--", "true"], check=True)
    walls.append((time.perf_counter() - t0) * 1e3)
print("cli:    resin-lock run -- true %.2f ms wall, spawn to exit (median of %d)" % (statistics.median(walls), rounds))
EOF
