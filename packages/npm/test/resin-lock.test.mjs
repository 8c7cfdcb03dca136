// The resin-lock npm package as a user has it: installed from the packed
// tarballs into a new project (packages/test.sh), against real lock files
// and the tools the supervisor and the host OS use on them.
//
// Environment (set by packages/test.sh):
//   RESIN_LOCK_TEST_TMP           a 0755 directory for the tests' lock dirs
//   RESIN_LOCK_TEST_NPM_LOCKFILE  the npm `lockfile` package that supervisors
//                                 v7 to v12 used, with tests/fixtures/npm's scripts
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import * as esm from 'resin-lock';

const require = createRequire(import.meta.url);
const cjs = require('resin-lock');
const { withLock, acquire, status, forceUpdate, binaryPath, LockBusyError, ResinLockError } = esm;

const PER_ARCH = { x64: '@resin-lock/linux-x64', arm64: '@resin-lock/linux-arm64', arm: '@resin-lock/linux-arm' };
const BOUND_MS = 10000; // generous: the machine may be loaded

/** A fresh lock directory, world-writable and sticky like the supervisor's. */
function lockDir() {
  const base = process.env.RESIN_LOCK_TEST_TMP || os.tmpdir();
  const dir = fs.mkdtempSync(path.join(base, 'node-'));
  fs.chmodSync(dir, 0o1777);
  return dir;
}

/** Resolves when `check()` holds, re-checked on every change in `dir` (inotify). */
function waitFor(dir, check, what) {
  return new Promise((resolve, reject) => {
    if (check()) return resolve();
    const watcher = fs.watch(dir, () => {
      if (check()) done(null);
    });
    const timer = setTimeout(() => done(new Error(`not within ${BOUND_MS} ms: ${what}`)), BOUND_MS);
    const done = (err) => {
      watcher.close();
      clearTimeout(timer);
      if (err) reject(err);
      else resolve();
    };
    // A change between the first check and the watch.
    if (check()) done(null);
  });
}

/** Settles with the promise, or rejects after BOUND_MS. */
function bounded(promise, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not within ${BOUND_MS} ms: ${what}`)), BOUND_MS);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

/** balenaOS safe_reboot's check: `flock -nx` on a read fd; 0 = it would reboot. */
function rebootCheck(file) {
  return spawnSync('sh', ['-c', 'exec 3<"$1" && flock -nx 3', 'sh', file]).status;
}

/** Supervisor v13+: `lockfile -r 0` as uid 65534. */
function supervisorLockfile(file) {
  return spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'lockfile', '-r', '0', file]);
}

/** Supervisor v7 to v12: the npm lockfile package's lockSync; "locked" or the error code. */
function npmLockSync(file) {
  const script = path.join(process.env.RESIN_LOCK_TEST_NPM_LOCKFILE, 'locksync.js');
  return spawnSync('node', [script, file], { encoding: 'utf8' }).stdout.trim();
}

test('the ESM and CommonJS entries are the same functions', () => {
  for (const name of ['withLock', 'acquire', 'status', 'forceUpdate', 'binaryPath', 'LockBusyError', 'ResinLockError']) {
    assert.equal(typeof esm[name], 'function', name);
    assert.equal(esm[name], cjs[name], name);
  }
  assert.ok(new LockBusyError('x', 1) instanceof ResinLockError);
  const installed = path.dirname(require.resolve('resin-lock/package.json'));
  assert.ok(fs.existsSync(path.join(installed, 'index.d.ts')), 'types are shipped');
  const pkg = JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8'));
  assert.deepEqual(pkg.dependencies || {}, {}, 'no runtime dependencies');
});

test('the binary is the installed per-arch package, unless RESIN_LOCK_BINARY says otherwise', () => {
  const saved = process.env.RESIN_LOCK_BINARY;
  delete process.env.RESIN_LOCK_BINARY;
  try {
    const found = binaryPath();
    assert.equal(found, require.resolve(`${PER_ARCH[process.arch]}/bin/resin-lock`));
    assert.match(found, /node_modules\/@resin-lock\/linux-[a-z0-9]+\/bin\/resin-lock$/);
    const version = spawnSync(found, ['--version'], { encoding: 'utf8' });
    assert.equal(version.status, 0);
    assert.match(version.stdout, /^resin-lock \d+\.\d+\.\d+/);
    process.env.RESIN_LOCK_BINARY = '/opt/elsewhere/resin-lock';
    assert.equal(binaryPath(), '/opt/elsewhere/resin-lock');
  } finally {
    if (saved === undefined) delete process.env.RESIN_LOCK_BINARY;
    else process.env.RESIN_LOCK_BINARY = saved;
  }
});

test('without the per-arch package: PATH, then an error naming the arch and the three ways', () => {
  // The main package alone, as `npm install --omit=optional` leaves it.
  const alone = fs.mkdtempSync(path.join(process.env.RESIN_LOCK_TEST_TMP || os.tmpdir(), 'alone-'));
  fs.copyFileSync(require.resolve('resin-lock'), path.join(alone, 'index.js'));
  const probe = `try { console.log(require(${JSON.stringify(path.join(alone, 'index.js'))}).binaryPath()) } catch (e) { console.log(e.name + ': ' + e.message) }`;
  const env = { ...process.env };
  delete env.RESIN_LOCK_BINARY;
  const bare = spawnSync(process.execPath, ['-e', probe], { cwd: alone, encoding: 'utf8', env: { ...env, PATH: '/nonexistent' } });
  assert.match(bare.stdout, /^ResinLockError: resin-lock: no binary for linux-/);
  assert.ok(bare.stdout.includes(`linux-${process.arch}`), bare.stdout);
  for (const way of [PER_ARCH[process.arch], 'PATH', 'RESIN_LOCK_BINARY']) assert.ok(bare.stdout.includes(way), `${way}: ${bare.stdout}`);
  const bin = path.join(alone, 'bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(require.resolve(`${PER_ARCH[process.arch]}/bin/resin-lock`), path.join(bin, 'resin-lock'));
  const onPath = spawnSync(process.execPath, ['-e', probe], { cwd: alone, encoding: 'utf8', env: { ...env, PATH: `/nonexistent:${bin}` } });
  assert.equal(onPath.stdout.trim(), path.join(bin, 'resin-lock'));
});

test('withLock holds the lock exactly while fn runs, as every supervisor and the host OS see it', async () => {
  const dir = lockDir();
  const file = path.join(dir, 'updates.lock');
  const result = await withLock(async (lock) => {
    assert.deepEqual(lock.paths, [file]);
    assert.ok(fs.existsSync(file), 'the lock file exists while fn runs');
    assert.equal(rebootCheck(file), 1, 'the host OS reboot check (flock -nx) is blocked');
    assert.equal(npmLockSync(file), 'EEXIST', 'supervisors v7-v12 (npm lockfile) see it held');
    assert.notEqual(supervisorLockfile(file).status, 0, 'supervisors v13+ (lockfile -r 0 as 65534) see it held');
    const seen = await status({ path: file });
    assert.equal(seen.locked, true);
    assert.equal(seen.locks[0].path, file);
    assert.equal(seen.locks[0].held_by, 'resin-lock');
    assert.equal(seen.locks[0].record.mode, 'hold');
    assert.equal(seen.locks[0].record.owner, process.pid, 'the owner is this program');
    return 42;
  }, { path: file, reason: 'node test' });
  assert.equal(result, 42);
  assert.ok(!fs.existsSync(file), 'the lock file is gone once withLock returns');
  assert.equal((await status({ path: file })).locked, false);
});

test('withLock releases when fn throws, and passes the error on', async () => {
  const file = path.join(lockDir(), 'updates.lock');
  await assert.rejects(
    withLock(() => {
      assert.ok(fs.existsSync(file));
      throw new Error('boom');
    }, { path: file }),
    /boom/,
  );
  assert.ok(!fs.existsSync(file));
});

test('a held lock: wait:false is LockBusyError, timeout gives up with LockBusyError', async () => {
  const file = path.join(lockDir(), 'updates.lock');
  const lock = await acquire({ path: file });
  try {
    const busy = await acquire({ path: file, wait: false }).then(() => null, (e) => e);
    assert.ok(busy instanceof LockBusyError, String(busy));
    assert.ok(busy instanceof ResinLockError);
    assert.equal(busy.exitCode, 1);
    assert.match(busy.message, /^resin-lock: /);
    assert.ok(!busy.message.includes('\n'), 'one line');
    const late = await acquire({ path: file, timeout: 200 }).then(() => null, (e) => e);
    assert.ok(late instanceof LockBusyError, String(late));
  } finally {
    await lock.release();
  }
  await lock.release(); // idempotent
  assert.ok(!fs.existsSync(file));
});

test('the npm lockfile package (supervisors v7-v12) holding it: busy, then taken once it lets go', async () => {
  const file = path.join(lockDir(), 'updates.lock');
  const script = path.join(process.env.RESIN_LOCK_TEST_NPM_LOCKFILE, 'locksync.js');
  const holder = spawn('node', [script, file, 'hold'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const said = await new Promise((resolve) => holder.stdout.once('data', (d) => resolve(String(d).trim())));
  assert.equal(said, 'locked');
  await assert.rejects(acquire({ path: file, wait: false }), LockBusyError);
  const waiting = acquire({ path: file });
  holder.stdin.end(); // the supervisor's process lets go
  const lock = await bounded(waiting, 'the lock taken after the npm lockfile holder let go');
  assert.ok(fs.existsSync(file));
  await lock.release();
  assert.ok(!fs.existsSync(file));
});

test("the supervisor's own lock (lockfile -r 0 as uid 65534): timeout is LockBusyError", async () => {
  const file = path.join(lockDir(), 'updates.lock');
  assert.equal(supervisorLockfile(file).status, 0);
  try {
    const err = await acquire({ path: file, timeout: 300 }).then(() => null, (e) => e);
    assert.ok(err instanceof LockBusyError, String(err));
    assert.equal(err.exitCode, 1);
    assert.equal(fs.statSync(file).uid, 65534, "the supervisor's lock is left alone");
  } finally {
    fs.rmSync(file, { force: true });
  }
});

test('a forced update (unlink, then lockfile -r 0 as uid 65534) resolves lost and aborts signal', async () => {
  const dir = lockDir();
  const file = path.join(dir, 'updates.lock');
  const lock = await acquire({ path: file });
  assert.equal(lock.signal.aborted, false);
  fs.unlinkSync(file);
  assert.equal(supervisorLockfile(file).status, 0);
  const event = await bounded(lock.lost, 'lost after a forced update');
  assert.equal(event.event, 'lost');
  assert.equal(event.path, file);
  assert.equal(lock.signal.aborted, true);
  await lock.release();
  assert.equal(fs.statSync(file).uid, 65534, "release leaves the supervisor's new lock alone");
  fs.rmSync(file, { force: true });
});

test('maxHold lets go after the time and says so through lost', async () => {
  const dir = lockDir();
  const file = path.join(dir, 'updates.lock');
  const lock = await acquire({ path: file, maxHold: 300 });
  const event = await bounded(lock.lost, 'expired after maxHold');
  assert.equal(event.event, 'expired');
  await waitFor(dir, () => !fs.existsSync(file), 'the lock file gone after maxHold');
  await lock.release();
});

test('shared holders together block an exclusive one and the reboot check', async () => {
  const file = path.join(lockDir(), 'updates.lock');
  const one = await acquire({ path: file, shared: true });
  const two = await acquire({ path: file, shared: true, wait: false });
  await assert.rejects(acquire({ path: file, wait: false }), LockBusyError);
  assert.equal(rebootCheck(file), 1);
  await one.release();
  assert.ok(fs.existsSync(file), 'the last shared holder out removes it');
  await two.release();
  assert.ok(!fs.existsSync(file));
});

test('SIGKILL of the Node process frees the lock', async () => {
  const dir = lockDir();
  const file = path.join(dir, 'updates.lock');
  const program = `require('resin-lock').acquire({ path: ${JSON.stringify(file)} }).then(() => console.log('held')); setInterval(() => {}, 1e6);`;
  const child = spawn('node', ['-e', program], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] });
  const said = await bounded(new Promise((resolve) => child.stdout.once('data', (d) => resolve(String(d).trim()))), 'held in the child');
  assert.equal(said, 'held');
  assert.ok(fs.existsSync(file));
  child.kill('SIGKILL');
  await waitFor(dir, () => !fs.existsSync(file), 'the lock file gone after SIGKILL of its Node holder');
});

test('errors: a bad location is ResinLockError with the exit status; force-update without a supervisor', async () => {
  const bad = await acquire({ path: '/nonexistent-resin-lock-dir/updates.lock' }).then(() => null, (e) => e);
  assert.ok(bad instanceof ResinLockError && !(bad instanceof LockBusyError), String(bad));
  assert.equal(bad.exitCode, 73);
  assert.match(bad.message, /nonexistent-resin-lock-dir/);
  const env = Object.keys(process.env).filter((k) => /SUPERVISOR_(ADDRESS|API_KEY)$/.test(k));
  assert.deepEqual(env, [], 'no supervisor API in the test environment');
  const none = await forceUpdate().then(() => null, (e) => e);
  assert.ok(none instanceof ResinLockError, String(none));
  assert.equal(none.exitCode, 69);
  await assert.rejects(acquire({ timeout: 'soon' }), TypeError, 'a bad option is caught before the binary runs');
});
