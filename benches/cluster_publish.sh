#!/usr/bin/env bash
# `make bench-cluster` (second half): how fast one worker gets records onto the bus. A
# nats-server (JetStream, loopback, temp store), one worker, STREAMS synthetic streams played as
# fast as they go (`is_live = false`, WINDOWS windows each); prints the windows acknowledged,
# the records dropped, and the seconds from starting the worker until `cluster status` shows
# every stream ended with nothing buffered (start-up and 0.2 s polling included).
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMS=${STREAMS:-4}
WINDOWS=${WINDOWS:-10000}
source benches/cluster_common.sh
start_nats
# 2 frames a window at 10 fps: WINDOWS windows are WINDOWS / 5 seconds of stream.
secs=$(python3 -c "print($WINDOWS / 5)")
{
  printf '[engine]\nwindow = 2\nstride = 2\nfps = 10\nwidth = 32\nheight = 24\n'
  for i in $(seq 1 "$STREAMS"); do
    printf '\n[[stream]]\nname = "f%d"\nsource = { kind = "synthetic", is_live = false, duration_s = %s }\n' "$i" "$secs"
  done
} > "$dir/fast.toml"
$S cluster add $N --cluster pub -c "$dir/fast.toml" > /dev/null
t0=$(date +%s.%N)
$S worker $N --cluster pub --name pub > /dev/null 2> "$dir/worker.err" &
for _ in $(seq 1 3000); do
  sleep 0.2
  out=$($S cluster status $N --cluster pub --json 2>/dev/null | python3 -c "
import json,sys; d=json.load(sys.stdin); s=d['streams']
print(int(all(x['state']=='ended' and x['buffered']==0 for x in s)), sum(x['windows'] for x in s), sum(x['dropped'] for x in s))")
  set -- $out
  if [ "$1" = 1 ]; then break; fi
done
took=$(python3 -c "import time; print(f'{time.time() - $t0:.2f}')")
echo "$2 windows acknowledged, $3 dropped, in $took s ($STREAMS streams, one worker)"
