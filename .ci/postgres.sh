#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on loopback for the tests and export
# CONCORD_TEST_POSTGRES_URL (sourced by .ci/run). Uses the distribution's
# PostgreSQL: installed with apt-get when missing. A server that cannot be
# started fails CI: the PostgreSQL tests are part of the suite.
set -euo pipefail

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$pg_bin" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get install -y -q postgresql >/dev/null
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  else
    echo "postgres.sh: no PostgreSQL and no apt-get to install it" >&2
    exit 1
  fi
fi

data=$(mktemp -d /tmp/concord-pg.XXXXXX)
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run_as=()
if [ "$(id -u)" -eq 0 ]; then  # the server refuses to run as root
  id concord-ci >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin concord-ci
  chown concord-ci "$data"
  run_as=(su concord-ci -s /bin/bash -c)
else
  run_as=(bash -c)
fi
"${run_as[@]}" "'$pg_bin/initdb' -D '$data/db' -U concord --auth=trust -E UTF8 >'$data/initdb.log' 2>&1"
"${run_as[@]}" "'$pg_bin/pg_ctl' -D '$data/db' -o '-k $data -p $port -c listen_addresses=127.0.0.1' -l '$data/server.log' -w start >/dev/null"
"${run_as[@]}" "'$pg_bin/createdb' -h 127.0.0.1 -p $port -U concord concord_test"
export CONCORD_TEST_POSTGRES_URL="postgresql+psycopg://concord@127.0.0.1:$port/concord_test"
export CONCORD_TEST_POSTGRES_STOP="${run_as[*]} '$pg_bin/pg_ctl -D $data/db -m fast stop'"
echo "postgres.sh: PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($data)"
