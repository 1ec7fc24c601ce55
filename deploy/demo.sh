#!/usr/bin/env bash
# Runs the fake AnqiCMS on 127.0.0.1:8001 and anqi-edge on :8080 (admin on
# 127.0.0.1:9090), prints example requests, and stops both on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
tok=$(mktemp)
trap 'kill $(jobs -p) 2>/dev/null; rm -f "$tok"' EXIT
./fake-anqicms -listen 127.0.0.1:8001 -users 3 -orders 2 -token-file "$tok" &
for _ in $(seq 50); do [ -s "$tok" ] && break; sleep 0.1; done
ANQI_EDGE_ADMIN_TOKEN=demo-admin ANQI_EDGE_LOG_FORMAT=text ./anqi-edge -config config.toml &
sleep 1
T=$(cat "$tok")
cat <<MSG

anqi-edge is on http://127.0.0.1:8080 in front of a fake AnqiCMS on :8001.
Try, in another terminal:

  # order 1 as its owner: first MISS, then HIT
  curl -si 'http://127.0.0.1:8080/api/communication/order/detail?id=1' -H 'token: $T' | grep -E '^(X-Cache|Age|ETag)|"code"'

  # send a message through anqi-edge; the next detail read is a MISS with the message in it
  curl -s -X POST http://127.0.0.1:8080/api/communication/message/send -H 'token: $T' -H 'Content-Type: application/json' -d '{"comm_order_id":1,"content":"hello from the demo"}'

  # purge order 1 by hand on the admin listener
  curl -si -X POST 'http://127.0.0.1:9090/admin/purge?id=1' -H 'Authorization: Bearer demo-admin'

  # watch order 1 (Server-Sent Events), then send a message in another terminal
  curl -N 'http://127.0.0.1:8080/api/communication/order/events?id=1' -H 'token: $T'

Ctrl-C stops both.
MSG
wait
