#!/usr/bin/env bash
# Start a private Redis for the queue tests and benchmarks (the one start-up script the pytest fixture and CI use).
#   scripts/redis_test_server.sh DATA_DIR [PORT]
# Listens on 127.0.0.1 only, on PORT (default: a free port), with AOF persistence (appendonly yes, appendfsync
# always: every queued task is on disk before Redis answers, so a restart loses nothing). Daemonizes; prints
# "PORT PID" on success; the caller stops Redis by that PID (kill PID). Running it again with the same DATA_DIR
# and PORT restarts Redis on the same data (what the restart test does).
set -euo pipefail
data_dir=${1:?usage: redis_test_server.sh DATA_DIR [PORT]}
port=${2:-}
command -v redis-server >/dev/null || { echo "redis-server is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
mkdir -p "$data_dir"
data_dir=$(cd "$data_dir" && pwd)
if [ -z "$port" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
fi
rm -f "$data_dir/redis.pid"
redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes --dir "$data_dir" \
  --appendonly yes --appendfsync always --save "" \
  --daemonize yes --pidfile "$data_dir/redis.pid" --logfile "$data_dir/redis.log"
for _ in $(seq 1 100); do
  if [ -s "$data_dir/redis.pid" ] && redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
    echo "$port $(cat "$data_dir/redis.pid")"
    exit 0
  fi
  sleep 0.05
done
echo "redis did not start on 127.0.0.1:$port (see $data_dir/redis.log)" >&2
exit 1
