#!/bin/sh
# Builds the plugin, starts the stand-in provider (test/server.py) on
# 127.0.0.1, and runs test/smoke.rhai through keycycle with the plugin
# granted that origin only. KEYCYCLE names the keycycle binary.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
keycycle=${KEYCYCLE:-keycycle}
"$here/build.sh"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 "$here/test/server.py" "$port" > "$work/server.out" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
while ! grep -q ready "$work/server.out" 2>/dev/null; do sleep 0.1; done
cat > "$work/keycycle.toml" <<TOML
state_dir = "$work/state"
cache_dir = "$work/cache"
runbooks_dir = "$here/test"

[plugins.{{name}}]
path = "$here/plugin.wasm"
hosts = ["http://127.0.0.1:$port"]
secrets = { token = "{{name}}/token" }
config = { base_url = "http://127.0.0.1:$port" }
{{inert_wasi}}
[runbooks.smoke]
secrets = ["{{name}}/token"]
TOML
KEYCYCLE_MASTER_KEY=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')
export KEYCYCLE_MASTER_KEY
printf 'test-admin-token' | "$keycycle" --config "$work/keycycle.toml" secrets set "{{name}}/token" >/dev/null
"$keycycle" --config "$work/keycycle.toml" plugins check "$here/plugin.wasm" >/dev/null
result=$("$keycycle" --config "$work/keycycle.toml" run smoke --output json)
echo "$result"
echo "$result" | python3 -c '
import json, sys
r = json.load(sys.stdin)["result"]
assert r["user"] == "admin", r
assert r["created"] == 1, r
assert r["name"].startswith("smoke ["), r
print("smoke test passed")
'
