#!/usr/bin/env bash
# Installs, with apt-get, whatever Debian packages the build, the demo and the
# tests need and this machine lacks.  Safe to run again: it installs nothing
# when everything is present.
set -euo pipefail

packages=(
  build-essential            # gcc, make
  postgresql-15              # server, initdb, pg_regress's server side
  postgresql-server-dev-15   # PGXS, headers, pg_regress
  postgresql-15-cron         # the real pg_cron, for the scheduler tests
  libcurl4-openssl-dev       # libcurl with OpenSSL
  libssl-dev
  libipc-run-perl            # PostgreSQL::Test::Cluster needs IPC::Run
  python3                    # the PostHog emulator (standard library only)
  openssl                    # test certificates
  curl jq                    # the hand-written pipeline of the benchmark
  procps                     # ps/pkill used by the tests
  clang libclang-rt-14-dev   # libFuzzer + ASan/UBSan for the fuzzers
  bzip2 debian-archive-keyring  # the jsonb fuzzer unpacks postgresql-15's source package
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
