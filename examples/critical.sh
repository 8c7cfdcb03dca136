#!/bin/sh
# An example critical section for `resin-lock run` (the README's first
# command). It changes nothing: it says what it does, waits a moment (an
# update would wait with it), and ends; resin-lock then releases the lock.
# Put the work that an update must not interrupt in its place.
set -eu
seconds=${1:-2}
echo "critical.sh: holding the update lock ${RESIN_LOCK_HELD:-(no: not started by resin-lock run)}"
echo "critical.sh: working for $seconds seconds; an update waits until I am done"
sleep "$seconds"
echo "critical.sh: done"
