#!/usr/bin/env bash
# pg_source.sh DIR: puts into DIR the few PostgreSQL 15 server source files
# the jsonb fuzzer builds in as its reference (jsonb_in and what it needs:
# the JSON lexer and parser, jsonb_util.c, numeric.c), from Debian's
# postgresql-15 source package.
#
# Debian ships no server sources in a binary package, and this machine's
# apt has no deb-src entry, so "apt-get source" runs with a private
# sources list and private list/cache directories under DIR: nothing of
# the system's apt configuration or state is touched.  It asks for the
# installed server's version first, then for whatever bookworm has.
# Set PG15_SOURCE_TARBALL to a postgresql-15_*.orig.tar.bz2 to skip apt.
set -euo pipefail

dir=${1:?usage: pg_source.sh DIR}
files=(
  src/backend/utils/adt/jsonb.c
  src/backend/utils/adt/jsonb_util.c
  src/backend/utils/adt/jsonfuncs.c
  src/backend/utils/adt/json.c
  src/backend/utils/adt/numeric.c
  src/common/jsonapi.c
)

[ -f "$dir/VERSION" ] && exit 0
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
apt="$dir/apt"
tarball=${PG15_SOURCE_TARBALL:-}
if [ -z "$tarball" ]; then
  mkdir -p "$apt/parts" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/download"
  # the machine's own Debian sources, as source-package entries
  : > "$apt/sources.list"
  if [ -f /etc/apt/sources.list ]; then
    sed -n 's/^deb \(.*\)$/deb-src \1/p' /etc/apt/sources.list > "$apt/sources.list"
  fi
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed 's/^Types: deb$/Types: deb-src/' "$f" > "$apt/parts/$(basename "$f")"
  done
  opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
        -o "APT::Sandbox::User=root" -qq)
  apt-get "${opts[@]}" update
  installed=$(dpkg-query -W -f='${Version}' postgresql-server-dev-15 2>/dev/null || true)
  cd "$apt/download"
  # the installed version's source if the archive still has it, else the newest
  if ! { [ -n "$installed" ] &&
         apt-get "${opts[@]}" source --download-only "postgresql-15=$installed" >/dev/null 2>&1; }; then
    # the security archive lists sources it does not keep: ask the main one
    sed -i '/security/d' "$apt/sources.list"
    for f in "$apt"/parts/*.sources; do
      [ -f "$f" ] && awk -v RS= -v ORS='\n\n' '!/security/' "$f" > "$f.new" && mv "$f.new" "$f"
    done
    apt-get "${opts[@]}" update
    apt-get "${opts[@]}" source --download-only postgresql-15 >/dev/null
  fi
  cd - >/dev/null
  tarball=$(ls "$apt"/download/postgresql-15_*.orig.tar.bz2 | head -n 1)
fi
top=postgresql-$(basename "$tarball" | sed 's/^postgresql-15_\(.*\)\.orig\.tar\.bz2$/\1/')
tar xjf "$tarball" -C "$dir" "${files[@]/#/$top/}"
for f in "${files[@]}"; do
  mkdir -p "$dir/$(dirname "$f")"
  mv "$dir/$top/$f" "$dir/$f"
done
rm -rf "${dir:?}/$top" "$apt"
echo "${top#postgresql-}" > "$dir/VERSION"
echo "PostgreSQL $(cat "$dir/VERSION") sources for the jsonb fuzzer's reference are in $dir"
