#!/usr/bin/env bash
# make bench: installs what is missing, builds and installs, runs test/bench.py.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash test/install_deps.sh
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
make -s >/dev/null && $SUDO make -s install >/dev/null
exec python3 test/bench.py
