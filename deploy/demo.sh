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
# MariaDB: when mariadbd is installed the demo starts its own (binlog on, in
# its temporary directory, on a free loopback port), keeps the fake's orders
# in it, and lets anqi-edge read its binlog ([cdc]): a reply made "in the
# admin panel" (a write to the database only, never through anqi-edge)
# reaches the customer's event stream at once. Without mariadbd the fake
# keeps its orders in memory and the admin line is left out.
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

# --- MariaDB with a binlog: our own, or none -------------------------------------
db_addr=
db_note="no mariadbd installed: changes made behind the proxy show when entries expire"
mariadbd_bin=$(command -v mariadbd || command -v /usr/sbin/mariadbd || true)
if [ -n "$mariadbd_bin" ] && command -v mariadb-install-db >/dev/null 2>&1 && command -v mariadb >/dev/null 2>&1; then
	mkdir -p "$work/db/data" "$work/db/tmp"
	if mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$work/db/data" \
		--auth-root-authentication-method=normal --skip-test-db >"$work/db/install.log" 2>&1; then
		for port in $(seq 13306 13406); do
			port_free "$port" || continue
			"$mariadbd_bin" --no-defaults --user="$(id -un)" --datadir="$work/db/data" --tmpdir="$work/db/tmp" \
				--socket="$work/db/sock" --port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
				--log-bin=demo-bin --binlog-format=ROW --binlog-row-metadata=FULL --server-id=1 \
				--innodb-buffer-pool-size=32M >"$work/db/mariadbd.log" 2>&1 &
			dpid=$!
			for _ in $(seq 100); do
				kill -0 "$dpid" 2>/dev/null || break
				mariadb --no-defaults --socket="$work/db/sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
				sleep 0.1
			done
			if kill -0 "$dpid" 2>/dev/null; then
				pids+=("$dpid")
				mariadb --no-defaults --socket="$work/db/sock" -uroot -e "
					CREATE DATABASE anqicms;
					CREATE USER 'cdc'@'%' IDENTIFIED BY 'demo';
					GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'cdc'@'%';
					GRANT SELECT ON anqicms.* TO 'cdc'@'%';"
				db_addr=127.0.0.1:$port
				db_note="a private MariaDB on $db_addr (binlog on; stopped with the demo)"
				break
			fi
			wait "$dpid" 2>/dev/null || true
		done
	fi
fi

# --- fake AnqiCMS ------------------------------------------------------------------
tok=$work/token
fake_db=()
[ -z "$db_addr" ] || fake_db=(-dsn "root@unix($work/db/sock)/anqicms")
"$fake_bin" -listen "$upstream" -users 3 -orders 2 -token-file "$tok" "${fake_db[@]}" >"$work/fake.log" 2>&1 &
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
# [[cdc.table]] lives only in a file: the demo's copy of config.toml adds it.
cp config.toml "$work/config.toml"
cdc_env=()
if [ -n "$db_addr" ]; then
	cat >>"$work/config.toml" <<TOML

[[cdc.table]]
name = "communication_orders"
order_column = "id"

[[cdc.table]]
name = "communication_messages"
order_column = "comm_order_id"
TOML
	cdc_env=(ANQI_EDGE_CDC_ADDR="$db_addr" ANQI_EDGE_CDC_USER=cdc ANQI_EDGE_CDC_PASSWORD=demo)
fi
env "${unset_edge_env[@]}" "${cdc_env[@]}" \
	ANQI_EDGE_SERVER_LISTEN=$listen \
	ANQI_EDGE_ADMIN_LISTEN=$admin \
	ANQI_EDGE_ADMIN_TOKEN=demo-admin \
	ANQI_EDGE_UPSTREAM_URL=http://$upstream \
	ANQI_EDGE_REDIS_ADDRS=$redis_addrs \
	ANQI_EDGE_REDIS_KEY_PREFIX=anqi-edge-demo \
	ANQI_EDGE_REDIS_CHANNEL=anqi-edge-demo:invalidate \
	ANQI_EDGE_LOG_FORMAT=text \
	"$edge_bin" -config "$work/config.toml" >"$work/anqi-edge.log" 2>&1 &
epid=$!
pids+=("$epid")
wait_for "$epid" "anqi-edge on $listen (admin $admin)" "$work/anqi-edge.log" http_ok "http://$admin/readyz"

cat <<MSG

anqi-edge is on http://$listen in front of a fake AnqiCMS on $upstream
(admin listener $admin; $redis_note; $db_note).
Try, in another terminal:

  # order 1 as its owner: first MISS, then HIT
  curl -si 'http://$listen/api/communication/order/detail?id=1' -H 'token: $T' | grep -E '^(X-Cache|Age|ETag)|"code"'

  # send a message through anqi-edge; the next detail read is a MISS with the message in it
  curl -s -X POST http://$listen/api/communication/message/send -H 'token: $T' -H 'Content-Type: application/json' -d '{"comm_order_id":1,"content":"hello from the demo"}'

  # purge order 1 by hand on the admin listener
  curl -si -X POST 'http://$admin/admin/purge?id=1' -H 'Authorization: Bearer demo-admin'

  # watch order 1 (Server-Sent Events), then send a message in another terminal
  curl -N 'http://$listen/api/communication/order/events?id=1' -H 'token: $T'
MSG
if [ -n "$db_addr" ]; then
	cat <<MSG

  # the shop's admin replies in the admin panel: a write to the database only,
  # never through anqi-edge; the binlog brings it to the event stream above at once
  curl -s -X POST http://$upstream/system/api/communication/message/send -H 'Content-Type: application/json' -d '{"comm_order_id":1,"content":"Your cake is ready"}'
MSG
fi
cat <<MSG

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
