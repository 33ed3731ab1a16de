#!/usr/bin/env bash
# A Spark standalone cluster on this machine: one master and N workers.
#
#   cluster_configs/standalone/cluster.sh start [N_WORKERS] [CORES_PER_WORKER] [MEMORY_PER_WORKER]
#   cluster_configs/standalone/cluster.sh status
#   cluster_configs/standalone/cluster.sh stop
#
# Uses the Spark that pip installed with pyspark (bin/spark-class), so it works
# from the project's venv without a separate Spark download. State (PIDs, logs,
# worker dirs) lives in $COVIDSPARK_CLUSTER_DIR (default /tmp/covidspark-cluster).
# The master URL is printed and written to $COVIDSPARK_CLUSTER_DIR/master-url.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${COVIDSPARK_CLUSTER_DIR:-/tmp/covidspark-cluster}"
HOST="${SPARK_MASTER_HOST:-127.0.0.1}"
PORT="${SPARK_MASTER_PORT:-7077}"
WEBUI="${SPARK_MASTER_WEBUI_PORT:-8080}"
PYTHON="${PYSPARK_PYTHON:-$(command -v python3)}"

spark_home() {
  "$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))'
}

wait_for_port() {  # host port seconds
  for _ in $(seq 1 "$3"); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 1
  done
  echo "nothing listens on $1:$2 after $3 s; see $STATE/*.log" >&2
  return 1
}

start() {
  local n="${1:-2}" cores="${2:-1}" memory="${3:-2g}"
  local home; home="$(spark_home)"
  mkdir -p "$STATE"
  export SPARK_HOME="$home" PYSPARK_PYTHON="$PYTHON"
  export SPARK_CONF_DIR="$HERE"   # spark-defaults.conf of this folder
  nohup "$home/bin/spark-class" org.apache.spark.deploy.master.Master \
    --host "$HOST" --port "$PORT" --webui-port "$WEBUI" >"$STATE/master.log" 2>&1 &
  echo $! >"$STATE/master.pid"
  wait_for_port "$HOST" "$PORT" 60
  for i in $(seq 1 "$n"); do
    mkdir -p "$STATE/worker-$i"
    nohup "$home/bin/spark-class" org.apache.spark.deploy.worker.Worker \
      --host "$HOST" --cores "$cores" --memory "$memory" --work-dir "$STATE/worker-$i" \
      --webui-port 0 "spark://$HOST:$PORT" >"$STATE/worker-$i.log" 2>&1 &
    echo $! >"$STATE/worker-$i.pid"
  done
  # Wait until every worker has registered with the master.
  for _ in $(seq 1 60); do
    if [ "$(grep -c 'Registering worker' "$STATE/master.log" || true)" -ge "$n" ]; then
      echo "spark://$HOST:$PORT" | tee "$STATE/master-url"
      return 0
    fi
    sleep 1
  done
  echo "only $(grep -c 'Registering worker' "$STATE/master.log" || true) of $n workers registered" >&2
  return 1
}

stop() {
  for pidfile in "$STATE"/worker-*.pid "$STATE"/master.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

status() {
  for pidfile in "$STATE"/master.pid "$STATE"/worker-*.pid; do
    [ -f "$pidfile" ] || continue
    if kill -0 "$(cat "$pidfile")" 2>/dev/null; then state=running; else state=dead; fi
    echo "$(basename "$pidfile" .pid): $state"
  done
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [N_WORKERS] [CORES] [MEMORY] | status | stop" >&2; exit 2 ;;
esac
