# Sourced by benches/cluster_*.sh: the release binary, a temp dir, a free loopback port for a
# nats-server, and a cleanup that stops the workers and the server. `start_nats` starts a
# server (JetStream on) with a fresh store.
S=target/release/sensorium
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
N="--nats nats://127.0.0.1:$port"
cleanup() { pkill -TERM -f "sensorium worker $N" || true; kill "${nats_pid:-0}" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
start_nats() {
  rm -rf "$dir/js"
  "$NATS" -js -a 127.0.0.1 -p "$port" -sd "$dir/js" > "$dir/nats.log" 2>&1 & nats_pid=$!
  sleep 0.5
}
