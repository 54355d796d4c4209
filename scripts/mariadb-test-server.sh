#!/usr/bin/env bash
# Start a private MariaDB server for the tests on 127.0.0.1 (data under var/mariadb-test) unless one is
# already answering, and create the test database and user. Prints the SQLAlchemy URL on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
DATADIR=$(pwd)/var/mariadb-test
SOCK=$DATADIR/mysqld.sock

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if mariadb-admin --protocol=socket --socket="$SOCK" -uroot ping >/dev/null 2>&1; then
  PORT=$(cat "$DATADIR/port")  # our server from an earlier run: reuse it
else
  PORT=${OPENASTRO_TEST_MYSQL_PORT:-3307}
  while ! port_free "$PORT"; do PORT=$((PORT + 1)); done  # another server holds it: take the next free port
  mkdir -p "$DATADIR"
  echo "$PORT" > "$DATADIR/port"
  # Run as whoever runs the tests (root included: --user=root is explicit), so the server can reach a data
  # directory under a private checkout (e.g. a 0700 mktemp dir that a `mysql` user could not traverse).
  RUNAS=$(id -un)
  if [ ! -d "$DATADIR/mysql" ]; then
    mariadb-install-db --datadir="$DATADIR" --user="$RUNAS" --auth-root-authentication-method=socket \
      --skip-test-db >"$DATADIR/install.log" 2>&1
  fi
  # join_cache_level=0: see docs/deploy.md (a BOINC transitioner crash on MariaDB 10.11 with tiny tables).
  mariadbd --no-defaults --datadir="$DATADIR" --socket="$SOCK" --port="$PORT" --bind-address=127.0.0.1 \
    --user="$RUNAS" --pid-file="$DATADIR/mysqld.pid" --log-error="$DATADIR/error.log" \
    --innodb-buffer-pool-size=64M --join-cache-level=0 --skip-name-resolve >/dev/null 2>&1 &
  for _ in $(seq 1 60); do
    mariadb-admin --protocol=socket --socket="$SOCK" -uroot ping >/dev/null 2>&1 && break
    sleep 0.5
  done
  mariadb-admin --protocol=socket --socket="$SOCK" -uroot ping >/dev/null 2>&1 || {
    echo "mariadb: the server did not start; see $DATADIR/error.log" >&2; tail -20 "$DATADIR/error.log" >&2; exit 1; }
fi
URL="mysql+mysqldb://openastro:openastro@127.0.0.1:${PORT}/openastro_test"
mariadb --protocol=socket --socket="$SOCK" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS openastro_test CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'openastro'@'127.0.0.1' IDENTIFIED BY 'openastro';
GRANT ALL PRIVILEGES ON *.* TO 'openastro'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
echo "$URL"
