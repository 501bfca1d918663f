#!/usr/bin/env bash
# Install (Debian package `postgresql`) and start a throwaway PostgreSQL cluster on 127.0.0.1,
# then write .ci/postgres.env with HOVIT_NAS_TEST_POSTGRES=<SQLAlchemy URL>.
set -euo pipefail
cd "$(dirname "$0")"
rm -f postgres.env
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DATA=${PGTEST_DIR:-/tmp/hovit-nas-pg}
PORT=${PGTEST_PORT:-55432}
id postgres >/dev/null 2>&1 || useradd -r -m postgres
if [ -f "$DATA/postmaster.pid" ]; then su postgres -c "$BIN/pg_ctl -D $DATA stop -m fast" >/dev/null 2>&1 || true; fi
rm -rf "$DATA"; mkdir -p "$DATA"; chown postgres "$DATA"
su postgres -c "$BIN/initdb -D $DATA -A trust -U postgres" >/dev/null
su postgres -c "$BIN/pg_ctl -D $DATA -l $DATA/log -o '-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200' -w start" >/dev/null
su postgres -c "$BIN/createdb -h 127.0.0.1 -p $PORT -U postgres hovit" 
echo "HOVIT_NAS_TEST_POSTGRES=postgresql+psycopg2://postgres@127.0.0.1:$PORT/hovit" > postgres.env
echo "postgres: running on 127.0.0.1:$PORT"
