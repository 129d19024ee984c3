#!/usr/bin/env bash
# Checks that the PostgreSQL and RabbitMQ hookrelay needs answer, and says how to start the
# one that does not. Exit 1 if either is missing.
#
#   scripts/check-services.sh          check only
#   scripts/check-services.sh --start  try to start what is not answering (CI, fresh machines)
set -u

PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
AMQP_HOST=${AMQP_HOST:-127.0.0.1}
AMQP_PORT=${AMQP_PORT:-5672}
start=false
[ "${1:-}" = "--start" ] && start=true

answers() { # host port
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

pg_up() {
  if command -v pg_isready >/dev/null; then
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
  else
    answers "$PG_HOST" "$PG_PORT"
  fi
}

amqp_up() { answers "$AMQP_HOST" "$AMQP_PORT"; }

PG_START='pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'
AMQP_START='rabbitmq-server -detached'

wait_for() { # name check-function seconds
  local i
  for ((i = 0; i < $3; i++)); do
    "$2" && return 0
    sleep 1
  done
  return 1
}

ok=true
if ! pg_up; then
  if $start; then
    echo "PostgreSQL is not answering on $PG_HOST:$PG_PORT; starting it: $PG_START"
    bash -c "$PG_START" || true
    wait_for PostgreSQL pg_up 60 || { echo "PostgreSQL did not come up"; ok=false; }
  else
    echo "PostgreSQL is not answering on $PG_HOST:$PG_PORT. Start it with:"
    echo "    $PG_START"
    ok=false
  fi
fi
if ! amqp_up; then
  if $start; then
    echo "RabbitMQ is not answering on $AMQP_HOST:$AMQP_PORT; starting it: $AMQP_START"
    bash -c "$AMQP_START" || true
    # The port opens before the broker accepts logins; the wait below covers the port only,
    # the service's own reconnect loop covers the rest.
    wait_for RabbitMQ amqp_up 120 || { echo "RabbitMQ did not come up"; ok=false; }
  else
    echo "RabbitMQ is not answering on $AMQP_HOST:$AMQP_PORT. Start it with:"
    echo "    $AMQP_START"
    ok=false
  fi
fi
$ok || exit 1
echo "PostgreSQL ($PG_HOST:$PG_PORT) and RabbitMQ ($AMQP_HOST:$AMQP_PORT) answer."
