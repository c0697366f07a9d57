#!/bin/sh
# What the app needs from the official postgres image's entrypoint, for a local image
# built from Debian's postgresql-15 (scripts/build-image --local-bases): on an empty data
# directory, a cluster whose superuser POSTGRES_USER has POSTGRES_PASSWORD, a database
# POSTGRES_DB, and password logins over the network. Starts as root to prepare the socket
# and data directories (a new volume, an empty /run), then runs as the postgres user.
set -eu
export PGDATA=${PGDATA:-/var/lib/postgresql/data}
if [ "$(id -u)" = 0 ]; then
  install -d -o postgres -g postgres -m 2775 /var/run/postgresql
  install -d -o postgres -g postgres -m 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
[ "${1:-}" = postgres ] && shift  # `command: [postgres, -c, ...]`, as with the official image
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
bin=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password_file=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
  "$bin/initdb" --username="$user" --pwfile="$password_file" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$password_file"
  printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    "$bin/postgres" --single -D "$PGDATA" -jE postgres <<SQL >/dev/null
CREATE DATABASE "$db" OWNER "$user";
SQL
  fi
  echo "postgres-entrypoint: initialised $PGDATA (database $db, owner $user)"
fi
exec "$bin/postgres" -D "$PGDATA" "$@"
