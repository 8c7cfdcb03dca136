"""``python -m resin_lock ARGS``: the resin-lock command line, from the wheel's binary."""

import os
import sys

from resin_lock import ResinLockError, binary_path


def main() -> None:
    try:
        binary = binary_path()
    except ResinLockError as err:
        sys.stderr.write("%s\n" % err)
        sys.exit(127)
    os.execv(binary, [binary] + sys.argv[1:])


if __name__ == "__main__":
    main()
