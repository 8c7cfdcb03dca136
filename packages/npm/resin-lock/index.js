'use strict';
// resin-lock for Node: the balena update lock, held by the resin-lock binary.
//
// This file never decides anything about the lock. It finds the binary,
// starts `resin-lock hold` with a pipe on its stdin that it keeps open,
// reads the JSON event lines the binary prints (waiting, held, lost,
// expired, released), and lets go by closing that pipe. If this process
// dies, even by SIGKILL, the kernel closes the pipe and the binary releases.

const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');

/** The per-arch package for each `process.arch` (esbuild's layout). */
const PACKAGES = {
  x64: '@resin-lock/linux-x64',
  arm64: '@resin-lock/linux-arm64',
  arm: '@resin-lock/linux-arm',
};

/** Any failure of the resin-lock binary: its one line, and its exit status. */
class ResinLockError extends Error {
  constructor(message, exitCode) {
    super(message);
    this.name = 'ResinLockError';
    this.exitCode = exitCode === undefined ? null : exitCode;
  }
}

/** The lock is held by someone else (`wait: false`, or `timeout` passed). */
class LockBusyError extends ResinLockError {
  constructor(message, exitCode) {
    super(message, exitCode);
    this.name = 'LockBusyError';
  }
}

/**
 * The binary to run: RESIN_LOCK_BINARY, else the installed per-arch package,
 * else `resin-lock` on PATH; else an error that names the ways.
 */
function binaryPath() {
  const fromEnv = process.env.RESIN_LOCK_BINARY;
  if (fromEnv) return fromEnv;
  const pkg = PACKAGES[process.arch];
  if (pkg && process.platform === 'linux') {
    try {
      return require.resolve(`${pkg}/bin/resin-lock`);
    } catch (_) {
      // Not installed (optional dependencies omitted): try PATH.
    }
  }
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, 'resin-lock');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch (_) {
      // Not there; the next directory.
    }
  }
  const wanted = pkg
    ? `install ${pkg} (npm installs it with resin-lock unless optional dependencies are omitted)`
    : `no package is built for ${process.platform}-${process.arch}; build resin-lock from source`;
  throw new ResinLockError(
    `resin-lock: no binary for ${process.platform}-${process.arch}: ${wanted}, ` +
      'or put resin-lock on PATH, or set RESIN_LOCK_BINARY to its path',
    null,
  );
}

function checkMs(name, value) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new TypeError(`resin-lock: options.${name} must be a number of milliseconds >= 0, not ${String(value)}`);
  }
  return `${Math.round(value)}ms`;
}

/** The global options: one `--path` per path. */
function globalArgs(options) {
  const paths = options.path === undefined || options.path === null ? [] : [].concat(options.path);
  const args = [];
  for (const p of paths) {
    if (typeof p !== 'string' || p === '') {
      throw new TypeError('resin-lock: options.path must be a path or an array of paths');
    }
    args.push('--path', p);
  }
  return args;
}

/** `resin-lock [--path P]... hold [...]` for these options. */
function holdArgs(options) {
  const args = globalArgs(options);
  args.push('hold');
  if (options.wait === false) {
    args.push('-n');
  } else if (options.timeout !== undefined && options.timeout !== null) {
    args.push('-w', checkMs('timeout', options.timeout));
  }
  if (options.shared) args.push('-s');
  if (options.reason !== undefined && options.reason !== null) args.push('--reason', String(options.reason));
  if (options.maxHold !== undefined && options.maxHold !== null) args.push('--max-hold', checkMs('maxHold', options.maxHold));
  if (options.tag) args.push('--tag');
  return args;
}

/** The error for a failed run: LockBusyError for exit 1, else ResinLockError. */
function failure(line, code, signal) {
  if (code === 1) return new LockBusyError(line || 'resin-lock: the lock is held', code);
  const how = signal ? `killed by ${signal}` : `exit status ${code}`;
  return new ResinLockError(line || `resin-lock: failed (${how})`, code);
}

/** Calls `onLine` for each complete line of a stream. */
function lines(stream, onLine) {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => {
    rest += chunk;
    let end;
    while ((end = rest.indexOf('\n')) >= 0) {
      onLine(rest.slice(0, end));
      rest = rest.slice(end + 1);
    }
  });
  stream.on('end', () => {
    if (rest) onLine(rest);
    rest = '';
  });
}

/**
 * Take the lock and keep it until `release()` (or until this process ends).
 * Resolves once the binary says `held`; rejects with LockBusyError or
 * ResinLockError, with nothing held.
 */
function acquire(options) {
  options = options || {};
  let args;
  let bin;
  try {
    args = holdArgs(options);
    bin = binaryPath();
  } catch (err) {
    return Promise.reject(err);
  }
  return new Promise((resolve, reject) => {
    // Its own process group: a Ctrl-C meant for this program does not make
    // the binary let go while this program may still be finishing its work.
    const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    let held = false;
    let settled = false;
    let exited = null;
    let lostResolve;
    const lost = new Promise((r) => {
      lostResolve = r;
    });
    const controller = new AbortController();
    let lostSeen = false;
    const markLost = (event) => {
      if (lostSeen) return;
      lostSeen = true;
      lostResolve(event);
      controller.abort(new ResinLockError(`resin-lock: lock lost: ${event.why || event.event}`, null));
    };
    // Stderr: lines wait until we know they are not the error message
    // (which becomes the rejection instead); once held, they pass through
    // to our stderr, where the container log keeps them.
    const pending = [];
    const flush = () => {
      for (const line of pending.splice(0)) process.stderr.write(`${line}\n`);
    };
    let lastLine = '';
    lines(child.stderr, (line) => {
      if (line) lastLine = line;
      if (held) process.stderr.write(`${line}\n`);
      else pending.push(line);
    });
    const exitedPromise = new Promise((r) => {
      child.on('close', (code, signal) => {
        exited = { code, signal };
        r(exited);
      });
    });
    const keepAlive = (on) => {
      for (const s of [child, child.stdin, child.stdout, child.stderr]) {
        if (on && s.ref) s.ref();
        if (!on && s.unref) s.unref();
      }
    };
    let releasing = null;
    const lock = {
      paths: [],
      since: null,
      lost,
      signal: controller.signal,
      release() {
        if (!releasing) {
          keepAlive(true);
          releasing = (async () => {
            child.stdin.end();
            const { code, signal } = await exitedPromise;
            if (code !== 0 && !lostSeen) {
              throw failure(lastLine, code, signal);
            }
          })();
        }
        return releasing;
      },
    };
    child.stdin.on('error', () => {
      // The binary already exited: 'close' says how.
    });
    child.on('error', (err) => {
      if (settled) return;
      settled = true;
      reject(new ResinLockError(`resin-lock: cannot run ${bin}: ${err.message}`, null));
    });
    lines(child.stdout, (line) => {
      let event;
      try {
        event = JSON.parse(line);
      } catch (_) {
        return; // Not an event line: nothing this wrapper knows.
      }
      switch (event && event.event) {
        case 'waiting':
          flush();
          break;
        case 'held':
          held = true;
          flush();
          lock.paths = Array.isArray(event.paths) ? event.paths : [];
          lock.since = event.since || null;
          if (!settled) {
            settled = true;
            // The lock never keeps this process alive: it ends with it.
            keepAlive(false);
            resolve(lock);
          }
          break;
        case 'lost':
        case 'expired':
          markLost(event);
          break;
        default:
          break;
      }
    });
    exitedPromise.then(({ code, signal }) => {
      if (!settled) {
        settled = true;
        // The last line is the error; the lines before it go to our stderr.
        const said = pending.splice(0).filter(Boolean);
        const line = said.pop();
        for (const before of said) process.stderr.write(`${before}\n`);
        reject(failure(line, code, signal));
        return;
      }
      if (!releasing) {
        // The binary ended while we held the lock and nobody asked it to.
        flush();
        markLost({ event: 'lost', path: null, why: `resin-lock hold ended (${signal || `exit status ${code}`})` });
      }
    });
  });
}

/**
 * Hold the lock exactly while `fn` runs: taken before it starts, released
 * after its promise settles (also when it throws). Returns what `fn` returns.
 */
async function withLock(fn, options) {
  if (typeof fn !== 'function') throw new TypeError('resin-lock: withLock(fn, options) needs a function');
  const lock = await acquire(options);
  try {
    return await fn(lock);
  } finally {
    await lock.release();
  }
}

/** Run the binary to its end; its stdout, or the failure. */
function runToEnd(args, okCodes) {
  let bin;
  try {
    bin = binaryPath();
  } catch (err) {
    return Promise.reject(err);
  }
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (err += d));
    child.on('error', (e) => reject(new ResinLockError(`resin-lock: cannot run ${bin}: ${e.message}`, null)));
    child.on('close', (code, signal) => {
      if (okCodes.includes(code)) {
        resolve(out);
      } else {
        const line = err.split('\n').filter(Boolean).pop();
        const how = signal ? `killed by ${signal}` : `exit status ${code}`;
        reject(new ResinLockError(line || `resin-lock: failed (${how})`, code));
      }
    });
  });
}

/** The parsed `resin-lock status --json` (exit 0: free, 1: a lock file exists). */
async function status(options) {
  const out = await runToEnd([...globalArgs(options || {}), 'status', '--json'], [0, 1]);
  try {
    return JSON.parse(out);
  } catch (e) {
    throw new ResinLockError(`resin-lock: status --json printed no JSON: ${e.message}`, null);
  }
}

/** Ask the supervisor to update now, overriding update locks. */
async function forceUpdate() {
  await runToEnd(['force-update'], [0]);
}

module.exports = { withLock, acquire, status, forceUpdate, binaryPath, LockBusyError, ResinLockError };
