#!/usr/bin/env bash
# Throw-away Redis and PostgreSQL servers for phogate's tests.
#
#   test/services.sh start    start both (or reuse running ones) and print
#                             REDIS_URL=... and DATABASE_URL=... lines
#   test/services.sh stop     stop them and remove their files
#   test/services.sh install  install redis-server and postgresql when missing (root only)
#
# State (pid files, data, logs) lives in $PHOGATE_SERVICES_DIR, by default
# ${TMPDIR:-/tmp}/phogate-services. Concurrent "start" calls share one pair of servers.
# As root, PostgreSQL runs as the postgres user, so the state directory's parent must be
# searchable by that user (/tmp is).
set -euo pipefail

STATE_DIR="${PHOGATE_SERVICES_DIR:-${TMPDIR:-/tmp}/phogate-services}"
READY_TRIES=100 # times 0.1s

log() { echo "services.sh: $*" >&2; }
die() {
	log "$*"
	exit 1
}

# pg_bindir prints the newest PostgreSQL bin directory, or nothing.
pg_bindir() {
	local d
	d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
	if [[ -z "$d" ]] && command -v pg_ctl >/dev/null; then
		d="$(dirname "$(command -v pg_ctl)")"
	fi
	if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
		echo "$d"
	fi
}

install_missing() {
	local need=()
	command -v redis-server >/dev/null || need+=(redis-server)
	[[ -n "$(pg_bindir)" ]] || need+=(postgresql)
	if ((${#need[@]} > 0)); then
		[[ "$(id -u)" -eq 0 ]] || die "missing ${need[*]}; install them or run as root"
		log "installing ${need[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update >&2 && apt-get install -y "${need[@]}" >&2
	fi
	if [[ "$(id -u)" -eq 0 ]] && ! id -u postgres >/dev/null 2>&1; then
		useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
	fi
}

# as_pg runs a command as the postgres user when we are root (postgres refuses root).
as_pg() {
	if [[ "$(id -u)" -eq 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# The servers are started with fd 9 (the lock) closed: a daemon that inherited it would hold
# the lock for its whole life and block every later start or stop.

# free_port prints a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

alive() {
	[[ -f "$STATE_DIR/env" ]] || return 1
	local rport pport
	rport="$(sed -n 's/^REDIS_PORT=//p' "$STATE_DIR/env")"
	pport="$(sed -n 's/^PG_PORT=//p' "$STATE_DIR/env")"
	[[ "$(redis-cli -h 127.0.0.1 -p "$rport" ping 2>/dev/null)" == PONG ]] || return 1
	as_pg "$(pg_bindir)/pg_ctl" -D "$STATE_DIR/pg/data" status >/dev/null 2>&1 || return 1
	(exec 3<>"/dev/tcp/127.0.0.1/$pport") 2>/dev/null
}

start_redis() {
	local port="$1"
	mkdir -p "$STATE_DIR/redis"
	redis-server --port "$port" --bind 127.0.0.1 --dir "$STATE_DIR/redis" \
		--save "" --appendonly no --daemonize yes \
		--pidfile "$STATE_DIR/redis/redis.pid" --logfile "$STATE_DIR/redis/redis.log" 9>&-
	for _ in $(seq "$READY_TRIES"); do
		[[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]] && return
		sleep 0.1
	done
	die "redis-server on port $port did not answer; see $STATE_DIR/redis/redis.log"
}

start_postgres() {
	local port="$1" bindir
	bindir="$(pg_bindir)"
	mkdir -p "$STATE_DIR/pg"
	if [[ "$(id -u)" -eq 0 ]]; then
		chown postgres: "$STATE_DIR/pg"
	fi
	chmod 700 "$STATE_DIR/pg"
	as_pg "$bindir/initdb" -D "$STATE_DIR/pg/data" -U postgres -A trust -E UTF8 --no-sync \
		>"$STATE_DIR/pg/initdb.log" 2>&1 ||
		die "initdb failed; see $STATE_DIR/pg/initdb.log"
	as_pg "$bindir/pg_ctl" -D "$STATE_DIR/pg/data" -l "$STATE_DIR/pg/postgres.log" -w -t 60 \
		-o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off" \
		start >&2 9>&- || {
		tail -n 20 "$STATE_DIR/pg/postgres.log" >&2 || true
		die "PostgreSQL did not start; see $STATE_DIR/pg/postgres.log"
	}
}

cmd_start() {
	mkdir -p "$STATE_DIR"
	chmod 755 "$STATE_DIR"
	exec 9>"$STATE_DIR/lock"
	flock 9
	if alive; then
		grep -E '^(REDIS_URL|DATABASE_URL|SERVICES_DIR)=' "$STATE_DIR/env"
		return
	fi
	stop_servers
	install_missing

	local rport pport
	rport="$(free_port)"
	start_redis "$rport"
	pport="$(free_port)"
	start_postgres "$pport"
	{
		echo "REDIS_PORT=$rport"
		echo "PG_PORT=$pport"
		echo "REDIS_URL=redis://127.0.0.1:$rport/0"
		echo "DATABASE_URL=postgres://postgres@127.0.0.1:$pport/postgres?sslmode=disable"
		echo "SERVICES_DIR=$STATE_DIR"
	} >"$STATE_DIR/env"
	grep -E '^(REDIS_URL|DATABASE_URL|SERVICES_DIR)=' "$STATE_DIR/env"
}

# stop_servers stops whatever a previous start left in STATE_DIR.
stop_servers() {
	if [[ -f "$STATE_DIR/redis/redis.pid" ]]; then
		kill "$(cat "$STATE_DIR/redis/redis.pid")" 2>/dev/null || true
	fi
	if [[ -f "$STATE_DIR/pg/data/postmaster.pid" ]]; then
		as_pg "$(pg_bindir)/pg_ctl" -D "$STATE_DIR/pg/data" -m fast -w stop >&2 || true
	fi
	rm -rf "$STATE_DIR/redis" "$STATE_DIR/pg" "$STATE_DIR/env"
}

cmd_stop() {
	[[ -d "$STATE_DIR" ]] || return 0
	exec 9>"$STATE_DIR/lock"
	flock 9
	stop_servers
	rm -rf "$STATE_DIR"
}

case "${1:-start}" in
start) cmd_start ;;
stop) cmd_stop ;;
install) install_missing ;;
*) die "usage: $0 [start|stop|install]" ;;
esac
