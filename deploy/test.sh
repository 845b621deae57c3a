#!/usr/bin/env bash
# The test command: installs what the tests need (Debian packages for slapd,
# Dovecot, swaks, mbsync) when missing, then runs every test. The tests start
# their own servers on free loopback ports in temp dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/lab/install-deps.sh
cargo test --locked "$@"
