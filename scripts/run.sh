#!/usr/bin/env bash
# Sets everything up and runs floorguard on this machine: the console (SQLite, on
# 127.0.0.1:8080) and an agent enrolled with it, enforcing policies/floor.toml.
# Prints the console URL and a first admin password. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
FG=.venv/bin/floorguard
LISTEN=${FLOORGUARD_LISTEN:-127.0.0.1:8080}
export FLOORGUARD_DB=${FLOORGUARD_DB:-sqlite:////var/lib/floorguard-console/console.db}
install -d -m 0700 /etc/floorguard /var/lib/floorguard /var/lib/floorguard-console
[ -f /etc/floorguard/policy.toml ] || install -m 0644 policies/floor.toml /etc/floorguard/policy.toml
[ -f /etc/floorguard/agent.toml ] || cat > /etc/floorguard/agent.toml <<TOML
console_url = "http://$LISTEN"
state_dir = "/var/lib/floorguard"
policy = "/etc/floorguard/policy.toml"
TOML
if ! $FG console user list 2>/dev/null | grep -q .; then
  password=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')
  echo "$password" | $FG console user add admin --role admin >/dev/null
  echo "First admin account: admin / $password  (change it: floorguard console user passwd admin)"
fi
$FG console --listen "$LISTEN" &
console_pid=$!
trap 'kill $console_pid 2>/dev/null; kill $agent_pid 2>/dev/null; wait' EXIT INT TERM
for _ in $(seq 100); do
  curl -sf "http://$LISTEN/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
if [ ! -s /var/lib/floorguard/token ]; then
  $FG enroll --console "http://$LISTEN" --code "$($FG console enroll-code --expires 10m)"
fi
$FG agent &
agent_pid=$!
echo "floorguard console: http://$LISTEN/   (agent running; Ctrl-C stops both)"
wait $agent_pid
