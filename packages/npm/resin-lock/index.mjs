// The ESM entry: the same functions and classes as the CommonJS one.
import cjs from './index.js';

export const { withLock, acquire, status, forceUpdate, binaryPath, LockBusyError, ResinLockError } = cjs;
export default cjs;
