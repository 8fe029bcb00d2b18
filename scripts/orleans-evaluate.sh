#!/usr/bin/env bash
# Starts a 3-silo Orleans cluster on this machine, runs `scache evaluate` for ResNet-20 through it (provider Orleans,
# 3 exact shards), and stops the cluster. Membership is Redis clustering (a redis-server on loopback, started here and
# installed with apt-get if missing); --localhost uses Orleans' development clustering instead (no Redis).
#
#   scripts/orleans-evaluate.sh [--localhost] [--keep-logs DIR] [-- EXTRA scache evaluate ARGS]
#
# Defaults: layers layer3.0,layer3.2 at θ = 90, λ = 0.8 (the report's choice), all 50,000 training images as the cache,
# data and checkpoints from ../shared. Anything after `--` goes to `scache evaluate` (e.g. --max-train 5000 --json).
# Ports: silos 11111-11113, gateways 30000-30002, Redis 6392 (SCACHE_SILO_PORT, SCACHE_GATEWAY_PORT, SCACHE_REDIS_PORT).
set -euo pipefail
cd "$(dirname "$0")/.."

clustering=Redis
logs=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --localhost) clustering=Localhost; shift ;;
    --keep-logs) logs="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

silo_port="${SCACHE_SILO_PORT:-11111}"
gateway_port="${SCACHE_GATEWAY_PORT:-30000}"
redis_port="${SCACHE_REDIS_PORT:-6392}"
work="$(mktemp -d)"
logs="${logs:-$work/logs}"
mkdir -p "$logs"
pids=()

stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work/state"
}
trap stop EXIT

dotnet build -c Release src/Host -v quiet -nologo >&2
scache=(src/Host/bin/Release/net10.0/scache)

cluster=(--set "Cache:Orleans:Clustering=$clustering" --set "Cache:Orleans:ClusterId=scache-$$")
if [[ "$clustering" == Redis ]]; then
  if ! command -v redis-server >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$logs/redis.log" 2>&1 &
  pids+=($!)
  cluster+=(--set "Cache:Orleans:RedisConfiguration=127.0.0.1:$redis_port")
fi

for i in 0 1 2; do
  "${scache[@]}" silo "${cluster[@]}" --silo-port $((silo_port + i)) --gateway-port $((gateway_port + i)) \
    --primary-silo-port "$silo_port" --state-dir "$work/state" >"$logs/silo-$i.out" 2>"$logs/silo-$i.log" &
  pids+=($!)
  [[ "$clustering" == Localhost ]] && cluster+=(--set "Cache:Orleans:GatewayPorts:$i=$((gateway_port + i))")
  # Wait for this silo (the first is the primary the others join under localhost clustering).
  for _ in $(seq 300); do grep -q "silo ready" "$logs/silo-$i.log" 2>/dev/null && break; sleep 0.2; done
  grep -q "silo ready" "$logs/silo-$i.log" || { echo "silo $i did not start; see $logs/silo-$i.log" >&2; tail -20 "$logs/silo-$i.log" >&2; exit 1; }
done
echo "3 silos ready ($clustering clustering); logs in $logs" >&2

"${scache[@]}" evaluate --model resnet20 --layers layer3.0,layer3.2 --theta 90 --lambda 0.8 \
  --provider Orleans --set Cache:Orleans:Shards=3 "${cluster[@]}" "$@"
