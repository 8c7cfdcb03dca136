/** Options of `withLock` and `acquire`; `path` alone also for `status`. */
export interface LockOptions {
  /** Wait until the lock is free (default true); false fails at once with LockBusyError. */
  wait?: boolean;
  /** Give up waiting after this many milliseconds (LockBusyError). */
  timeout?: number;
  /** A shared lock: several holders at once; the host OS reboot check is blocked all the same. */
  shared?: boolean;
  /** Why the lock is held, shown by `resin-lock status` and to anyone who waits. */
  reason?: string;
  /** Let go after this many milliseconds even if the work goes on (`lost` then resolves). */
  maxHold?: number;
  /** The lock file(s); by default the ones the device's supervisor checks. */
  path?: string | string[];
  /** Publish the hold as a device tag in the balena dashboard. */
  tag?: boolean;
}

/** What resolves `lost`: the binary's event line. */
export interface LostEvent {
  event: 'lost' | 'expired';
  path?: string | null;
  why?: string;
  [field: string]: unknown;
}

/** A held lock. */
export interface Lock {
  /** The lock files held. */
  readonly paths: string[];
  /** When the lock was taken (UTC, RFC 3339), as the binary said. */
  readonly since: string | null;
  /** Resolves when the lock is taken from us (a forced update, `release --force`, maxHold); never rejects. */
  readonly lost: Promise<LostEvent>;
  /** Aborted when `lost` resolves: hand it to fetch() or your own loops. */
  readonly signal: AbortSignal;
  /** Let go and wait until the lock file is gone; calling it again is harmless. */
  release(): Promise<void>;
}

export interface StatusOptions {
  path?: string | string[];
}

/** Any failure of the resin-lock binary. `exitCode` is its exit status (null if it did not run). */
export class ResinLockError extends Error {
  constructor(message: string, exitCode: number | null);
  readonly exitCode: number | null;
}

/** The lock is held by someone else: `wait: false`, or `timeout` passed (exit status 1). */
export class LockBusyError extends ResinLockError {}

/** Hold the lock exactly while `fn` runs; returns what `fn` returns. */
export function withLock<T>(fn: (lock: Lock) => T | Promise<T>, options?: LockOptions): Promise<T>;
/** Take the lock and keep it until `release()` or until this process ends. */
export function acquire(options?: LockOptions): Promise<Lock>;
/** The parsed `resin-lock status --json`. */
export function status(options?: StatusOptions): Promise<Record<string, any>>;
/** Ask the supervisor to update now, overriding update locks. */
export function forceUpdate(): Promise<void>;
/** The resin-lock binary this package runs. */
export function binaryPath(): string;
