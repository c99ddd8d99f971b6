#!/usr/bin/env bash
# replica_load.sh: what one coordinator replica handles (issue #9, acceptance B).
#
# Starts a nats-server, one coordinator and the load generator (`idlefleet
# agent --fake-engine`: N simulated cars sharing a few NATS connections, real
# agents and protocol, stand-in tokens instead of a model), waits until the
# coordinator tracks every car, then measures:
#   1. idle: the cars' own traffic (hellos, state reports, heartbeats) for
#      --idle-seconds: messages a second and the coordinator's CPU;
#   2. load: bench/api_load with --clients streaming clients for --seconds on
#      top of it: requests and tokens a second, and the coordinator's CPU.
# The coordinator's CPU is read from /proc/<pid>/stat (user + system), so the
# figures are per core of the coordinator alone, whatever else runs.
#
# Usage (after scripts/build release):
#   bench/replica_load.sh [--vehicles N] [--connections K] [--clients C]
#                         [--seconds S] [--idle-seconds S] [--tokens-per-second T]
#                         [--max-tokens N] [--heartbeat-ms MS]
#                         [--database postgresql://...] [--model PATH.gguf]
# Without --model it converts ../shared/models/stories260K.bin (the coordinator
# needs a model's tokenizer; the fake engine needs no weights).
set -euo pipefail

vehicles=10000
connections=16
clients=32
seconds=30
idle_seconds=20
tokens_per_second=20
max_tokens=""   # "": api_load's own draw (16..128)
heartbeat_ms=2000
database=""
model=""
while [ $# -gt 0 ]; do
  case "$1" in
    --vehicles) vehicles=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --idle-seconds) idle_seconds=$2; shift 2 ;;
    --tokens-per-second) tokens_per_second=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    --heartbeat-ms) heartbeat_ms=$2; shift 2 ;;
    --database) database=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    *) echo "replica_load.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/build/release/bin
[ -x "$bin/idlefleet" ] && [ -x "$bin/api_load" ] || { echo "replica_load.sh: build first (scripts/build release)" >&2; exit 2; }
work=$(mktemp -d /tmp/idlefleet-replica-load-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

calc() { awk "BEGIN { printf \"%.6f\", $* }"; }
now() { date +%s.%N; }
# The port a server chose, from the line of its log that names it.
port_from_log() {
  for _ in $(seq 200); do
    p=$(grep -oE "$2" "$1" 2>/dev/null | head -1 | grep -oE '[0-9]+$' || true)
    [ -n "$p" ] && { echo "$p"; return; }
    sleep 0.05
  done
  echo "replica_load: no port in $1:" >&2; tail -5 "$1" >&2; exit 1
}
# user+system CPU seconds of a process (clock ticks / CLK_TCK)
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
metric() { curl -s "http://127.0.0.1:$http_port/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
tracked() {
  curl -s "http://127.0.0.1:$http_port/metrics" |
    awk '/^idlefleet_vehicles\{/ && !/offline/ { n += $2 } END { print n + 0 }'
}

if [ -z "$model" ]; then
  model=$work/stories260K.gguf
  "$bin/idlefleet" model convert-llama2c "$root/../shared/models/stories260K.bin" \
    --tokenizer "$root/../shared/models/tok512.bin" -o "$model" >/dev/null
fi

nats-server -a 127.0.0.1 -p -1 >"$work/nats.log" 2>&1 &
pids+=($!)
nats_port=$(port_from_log "$work/nats.log" 'client connections on 127.0.0.1:[0-9]+')
# A vehicle is gone after 15 s of silence by default: keep that above the heartbeat.
timeout_ms=$(( heartbeat_ms * 3 > 15000 ? heartbeat_ms * 3 : 15000 ))
{
  echo "data_dir = \"$work/data\""
  [ -n "$database" ] && echo "database = \"$database\""
  echo "[jobs]"
  echo "vehicle_timeout_ms = $timeout_ms"
} >"$work/coordinator.toml"
coordinator_args=(coordinator --config "$work/coordinator.toml" --nats "nats://127.0.0.1:$nats_port" --http-port 0
                  --model "stories260K=$model")
"$bin/idlefleet" "${coordinator_args[@]}" >"$work/coordinator.log" 2>&1 &
coordinator=$!
pids+=($coordinator)
http_port=$(port_from_log "$work/coordinator.log" 'serving http://127.0.0.1:[0-9]+')

started=$(now)
"$bin/idlefleet" agent --nats "nats://127.0.0.1:$nats_port" --coordinator "http://127.0.0.1:$http_port" \
  --vehicles "$vehicles" --fake-engine --nats-connections "$connections" \
  --fake-tokens-per-second "$tokens_per_second" --heartbeat-ms "$heartbeat_ms" --tick-ms 1000 --start 01:00 \
  --status-every 0 \
  --cache-dir "$work/cache" >"$work/agent.log" 2>&1 &
agent=$!
pids+=($agent)
echo "replica_load: $vehicles vehicles on $connections NATS connections; waiting until the coordinator tracks them"
for _ in $(seq 1200); do
  n=$(tracked)
  [ "$n" -ge "$vehicles" ] && break
  kill -0 "$agent" 2>/dev/null || { echo "replica_load: the agent died:" >&2; tail -5 "$work/agent.log" >&2; exit 1; }
  sleep 0.5
done
echo "replica_load: tracking $(tracked) vehicles after $(calc "$(now) - $started") s"

# 1. Idle: the fleet's own traffic.
c0=$(cpu_s "$coordinator"); m0=$(metric idlefleet_vehicle_messages_total); t0=$(now)
sleep "$idle_seconds"
c1=$(cpu_s "$coordinator"); m1=$(metric idlefleet_vehicle_messages_total); t1=$(now)
idle_wall=$(calc "$t1 - $t0")
idle_msgs=$(calc "($m1 - $m0) / $idle_wall")
idle_cpu=$(calc "($c1 - $c0) / $idle_wall")

# Rows the database wrote (PostgreSQL's own count), when there is one.
db_rows() {
  if [ -n "$database" ]; then
    psql "$database" -Atc "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = current_database()"
  else
    echo 0
  fi
}

# 2. Load: streaming clients on top.
r2=$(db_rows)
c2=$(cpu_s "$coordinator"); m2=$(metric idlefleet_vehicle_messages_total)
tok2=$(metric idlefleet_tokens_total); t2=$(now)
load_args=(--url "http://127.0.0.1:$http_port" --clients "$clients" --seconds "$seconds" --pid "$coordinator")
[ -n "$max_tokens" ] && load_args+=(--max-tokens-min "$max_tokens" --max-tokens-max "$max_tokens")
"$bin/api_load" "${load_args[@]}" >"$work/api_load.log" 2>&1 || true
c3=$(cpu_s "$coordinator"); m3=$(metric idlefleet_vehicle_messages_total)
tok3=$(metric idlefleet_tokens_total); t3=$(now)
load_wall=$(calc "$t3 - $t2")
load_msgs=$(calc "($m3 - $m2) / $load_wall")
load_cpu=$(calc "($c3 - $c2) / $load_wall")
load_tokens=$(calc "($tok3 - $tok2) / $load_wall")
sleep 1  # PostgreSQL's statistics reach pg_stat_database within about half a second
r3=$(db_rows)
load_rows=$(calc "($r3 - $r2) / $load_wall")

echo
echo "== api_load =="
sed -n '/^== Requests/,/^    protocol/p' "$work/api_load.log"
echo
echo "== one coordinator replica ($(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%Y-%m-%dT%H:%MZ) =="
printf "vehicles tracked                 %d (on %d NATS connections)\n" "$vehicles" "$connections"
printf "idle: vehicle messages/s         %.0f\n" "$idle_msgs"
printf "idle: coordinator CPU            %.3f cores\n" "$idle_cpu"
printf "idle: messages per CPU-second    %.0f\n" "$(calc "$idle_msgs / $idle_cpu")"
printf "load: vehicle messages/s         %.0f\n" "$load_msgs"
printf "load: tokens relayed/s           %.0f\n" "$load_tokens"
printf "load: coordinator CPU            %.3f cores\n" "$load_cpu"
[ -n "$database" ] && printf "load: database rows written/s    %.0f (PostgreSQL)\n" "$load_rows"
printf "load average at the end          %s\n" "$(cut -d' ' -f1-3 /proc/loadavg)"
echo "(the agent, nats-server and api_load ran on the same machine; the CPU figures are the coordinator's own)"
