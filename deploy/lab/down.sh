#!/bin/bash
# down.sh — stop everything deploy/lab/up.sh started (by pid file); keeps the
# state in $LAB_DIR (default /tmp/mailshift-lab) for inspection.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
LAB_DIR=${LAB_DIR:-/tmp/mailshift-lab}
# shellcheck source=lib.sh
. "$here/lib.sh"
for f in "$LAB_DIR/old/run/master.pid" "$LAB_DIR/new/run/master.pid" "$LAB_DIR/slapd/slapd.pid"; do
	stop_pidfile "$f"
done
# mailshift itself, if up.sh's foreground serve is still running elsewhere.
pkill -TERM -f "mailshift serve --config $LAB_DIR/mailshift.toml" 2>/dev/null || true
echo "lab in $LAB_DIR stopped"
