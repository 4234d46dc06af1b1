#!/usr/bin/env bash
# `make bench-cluster`: the takeover time after `kill -9` of a worker, at the default lease
# (10 s), release build: a nats-server (JetStream, loopback, temp store), the six streams of
# pipelines/configs/cluster.toml over 3 workers, one worker killed ROUNDS times (a fresh
# cluster each round). Prints, per round, when `cluster status` first shows every stream of
# the killed worker running on another one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
source benches/cluster_common.sh
for round in $(seq 1 "$ROUNDS"); do
  start_nats
  $S cluster add $N --cluster bench -c pipelines/configs/cluster.toml > /dev/null
  for w in w1 w2 w3; do $S worker $N --cluster bench --name $w > /dev/null 2> "$dir/$w.err" & done
  sleep 12
  victim=$($S cluster status $N --cluster bench --json | python3 -c "import json,sys; print(json.load(sys.stdin)['streams'][0]['worker'])")
  t0=$(date +%s.%N); pkill -9 -f "sensorium worker $N --cluster bench --name $victim"; took=""
  for _ in $(seq 1 600); do
    sleep 0.1
    ok=$($S cluster status $N --cluster bench --json 2>/dev/null | python3 -c "
import json,sys; d=json.load(sys.stdin)
print(int(all(x['worker'] != '$victim' and x['state'] == 'running' for x in d['streams'])))")
    if [ "$ok" = 1 ]; then took=$(python3 -c "import time; print(f'{time.time() - $t0:.2f}')"); break; fi
  done
  echo "round $round: killed $victim; its streams running on the others after ${took:-never} s (lease 10 s)"
  pkill -TERM -f "sensorium worker $N" || true; sleep 2; kill "$nats_pid"; wait "$nats_pid" 2>/dev/null || true
done
