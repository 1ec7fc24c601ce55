#!/usr/bin/env bash
# Runs the fake AnqiCMS and anqi-edge in front of it, waits until anqi-edge
# answers /readyz, prints example requests, and stops everything on Ctrl-C.
#
#   make demo            (builds ./anqi-edge and ./fake-anqicms, then runs this)
#
# Redis: when redis-server is installed the demo starts its own, on a free
# loopback port, and stops it at the end; otherwise anqi-edge runs with its
# memory cache only. It never uses a Redis it did not start (and writes under
# its own key prefix and channel all the same).
#
# Knobs (environment): DEMO_LISTEN (127.0.0.1:8080), DEMO_ADMIN
# (127.0.0.1:9090), DEMO_UPSTREAM (127.0.0.1:8001), DEMO_EDGE_BIN
# (./anqi-edge), DEMO_FAKE_BIN (./fake-anqicms), DEMO_READY_TIMEOUT (20 s).
set -euo pipefail
cd "$(dirname "$0")/.."

listen=${DEMO_LISTEN:-127.0.0.1:8080}
admin=${DEMO_ADMIN:-127.0.0.1:9090}
upstream=${DEMO_UPSTREAM:-127.0.0.1:8001}
edge_bin=${DEMO_EDGE_BIN:-./anqi-edge}
fake_bin=${DEMO_FAKE_BIN:-./fake-anqicms}
ready_timeout=${DEMO_READY_TIMEOUT:-20}

for b in "$edge_bin" "$fake_bin"; do
	if [ ! -x "$b" ]; then
		echo "demo: $b is missing; run 'make demo' (it builds both binaries)" >&2
		exit 1
	fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/anqi-edge-demo.XXXXXX")
pids=()
cleanup() {
	local rc=$?
	set +e
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# http_status URL: the HTTP status URL answers with ("" if none), by curl
# or else bash's /dev/tcp.
http_status() {
	if command -v curl >/dev/null 2>&1; then
		curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$1" 2>/dev/null | grep -v '^000$' || true
		return
	fi
	local hostport=${1#http://} path status=
	path=/${hostport#*/}
	hostport=${hostport%%/*}
	if exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}"; then
		printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$hostport" >&3
		read -r -t 2 _ status _ <&3 || true
		exec 3<&- 3>&-
	fi 2>/dev/null
	echo "$status"
}
http_ok() { [ "$(http_status "$1")" = 200 ]; }
http_answers() { [ -n "$(http_status "$1")" ]; }

# port_free PORT: nothing accepts connections on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# fail WHAT LOG: say what did not start, show the end of its log, and stop.
fail() {
	echo "demo: $1" >&2
	echo "--- last lines of $2:" >&2
	tail -n 30 "$2" >&2 || true
	exit 1
}

# wait_for PID WHAT LOG CHECK...: poll CHECK until it succeeds, failing when
# PID exits or the timeout passes.
wait_for() {
	local pid=$1 what=$2 log=$3 deadline=$((SECONDS + ready_timeout))
	shift 3
	until "$@"; do
		kill -0 "$pid" 2>/dev/null || fail "$what exited during start-up" "$log"
		[ "$SECONDS" -lt "$deadline" ] || fail "$what did not become ready within ${ready_timeout}s" "$log"
		sleep 0.2
	done
}

# --- Redis: our own, or none ---------------------------------------------------
redis_addrs=
redis_note="no redis-server installed: anqi-edge runs with its memory cache only"
if command -v redis-server >/dev/null 2>&1; then
	for port in $(seq 16379 16479); do
		port_free "$port" || continue
		redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
			--dir "$work" >"$work/redis.log" 2>&1 &
		rpid=$!
		# Ours only if our process is the one answering (another may have
		# taken the port in between: then ours exits and we try the next).
		for _ in $(seq 50); do
			kill -0 "$rpid" 2>/dev/null || break
			port_free "$port" || break
			sleep 0.1
		done
		if kill -0 "$rpid" 2>/dev/null && ! port_free "$port"; then
			pids+=("$rpid")
			redis_addrs=127.0.0.1:$port
			redis_note="a private redis-server on $redis_addrs (stopped with the demo)"
			break
		fi
		wait "$rpid" 2>/dev/null || true
	done
	[ -n "$redis_addrs" ] || redis_note="no free port for a private redis-server: anqi-edge runs with its memory cache only"
fi

# --- fake AnqiCMS ------------------------------------------------------------------
tok=$work/token
"$fake_bin" -listen "$upstream" -users 3 -orders 2 -token-file "$tok" >"$work/fake.log" 2>&1 &
fpid=$!
pids+=("$fpid")
wait_for "$fpid" "the fake AnqiCMS on $upstream" "$work/fake.log" http_answers "http://$upstream/"
T=$(cat "$tok")

# --- anqi-edge ---------------------------------------------------------------------
# It sees only the ANQI_EDGE_* variables set here: one left in the caller's
# shell would change the demo or, naming no key, stop anqi-edge at start.
unset_edge_env=()
for v in $(compgen -e); do
	case $v in ANQI_EDGE_*) unset_edge_env+=(-u "$v") ;; esac
done
env "${unset_edge_env[@]}" \
	ANQI_EDGE_SERVER_LISTEN=$listen \
	ANQI_EDGE_ADMIN_LISTEN=$admin \
	ANQI_EDGE_ADMIN_TOKEN=demo-admin \
	ANQI_EDGE_UPSTREAM_URL=http://$upstream \
	ANQI_EDGE_REDIS_ADDRS=$redis_addrs \
	ANQI_EDGE_REDIS_KEY_PREFIX=anqi-edge-demo \
	ANQI_EDGE_REDIS_CHANNEL=anqi-edge-demo:invalidate \
	ANQI_EDGE_LOG_FORMAT=text \
	"$edge_bin" -config config.toml >"$work/anqi-edge.log" 2>&1 &
epid=$!
pids+=("$epid")
wait_for "$epid" "anqi-edge on $listen (admin $admin)" "$work/anqi-edge.log" http_ok "http://$admin/readyz"

cat <<MSG

anqi-edge is on http://$listen in front of a fake AnqiCMS on $upstream
(admin listener $admin; $redis_note).
Try, in another terminal:

  # order 1 as its owner: first MISS, then HIT
  curl -si 'http://$listen/api/communication/order/detail?id=1' -H 'token: $T' | grep -E '^(X-Cache|Age|ETag)|"code"'

  # send a message through anqi-edge; the next detail read is a MISS with the message in it
  curl -s -X POST http://$listen/api/communication/message/send -H 'token: $T' -H 'Content-Type: application/json' -d '{"comm_order_id":1,"content":"hello from the demo"}'

  # purge order 1 by hand on the admin listener
  curl -si -X POST 'http://$admin/admin/purge?id=1' -H 'Authorization: Bearer demo-admin'

  # watch order 1 (Server-Sent Events), then send a message in another terminal
  curl -N 'http://$listen/api/communication/order/events?id=1' -H 'token: $T'

anqi-edge's log follows. Ctrl-C stops everything.
MSG
tail -n +1 -f "$work/anqi-edge.log" &
pids+=($!)
# Until anqi-edge (or the fake) exits, or Ctrl-C.
while kill -0 "$epid" 2>/dev/null && kill -0 "$fpid" 2>/dev/null; do
	sleep 1
done
kill -0 "$epid" 2>/dev/null || fail "anqi-edge exited" "$work/anqi-edge.log"
fail "the fake AnqiCMS exited" "$work/fake.log"
