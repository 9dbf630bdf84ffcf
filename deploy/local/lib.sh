# deploy/local/lib.sh — functions shared by deploy/local/up and down.
# Every process started here records its pid and start time in $state/run/NAME.pid
# and logs to $state/logs/NAME.log.

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

pg_bin=/usr/lib/postgresql/15/bin

as_postgres() { # from /: postgres may not enter the current directory (paths given are absolute)
    if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# A short name for a state folder, the same for every spelling of its path:
# what names the folders kept for it outside it (pg_home, zmq_home).
state_key() { # state
    realpath -m "$1" | sha256sum | cut -c1-16
}

# Where the cluster lives: data in pg/, its Unix socket in pgsock/. As root, initdb and
# the server run as postgres, which must reach those files. A state folder
# under a directory only root may enter (/root, where a clone made as root
# usually is) is out of its reach: then the cluster lives in
# /var/lib/postgresql/tds-local/<hash of the state path>, $state/pg and
# $state/logs/postgres.log are links to it, and down --clean removes it too.
pg_home() { # state
    local state=$1
    if [ -L "$state/pg" ]; then dirname "$(readlink -f "$state/pg")"; return; fi
    if [ "$(id -u)" != 0 ] || runuser -u postgres -- test -x "$state" 2>/dev/null; then
        echo "$state"
        return
    fi
    echo "/var/lib/postgresql/tds-local/$(state_key "$state")"
}

# Where the stages' ZeroMQ sockets live: run/zmq/ in the state folder, unless
# its sockets' paths would be longer than a Unix socket's may be (107 bytes,
# with room for the longest name, processor-999): then a folder of the same
# user's in /tmp named after the state path, which down --clean removes too.
zmq_home() { # state
    local z="$1/run/zmq"
    if [ "$(printf %s "$z/processor-999" | wc -c)" -le 107 ]; then
        echo "$z"
    else
        echo "/tmp/tds-zmq-$(state_key "$1")"
    fi
}

# The server listens on no TCP port, only on a Unix socket in $home/pgsock, a
# folder of mode 0700 owned by the server's user: its trust authentication
# (and the Zoho refresh tokens in tds.oauth_tokens) is then open to root and
# that user alone. The port names the socket file (.s.PGSQL.PORT). The options
# are given at each start, so a cluster made by an earlier version (which
# listened on 127.0.0.1) is closed too once restarted.
start_postgres() { # state port
    local state=$1 port=$2 home data log sock
    home=$(pg_home "$state")
    data=$home/pg sock=$home/pgsock
    # pg_ctl hands -D, -l and -o to a shell, in double and (here) single quotes
    case "$home" in *[\'\"\$\`\\]*)
        echo "the path '$home' holds a quote, \$, \` or \\, which pg_ctl cannot pass to PostgreSQL; choose another --state" >&2
        return 1 ;;
    esac
    if [ "$(printf %s "$sock/.s.PGSQL.$port" | wc -c)" -gt 107 ]; then
        echo "the PostgreSQL socket $sock/.s.PGSQL.$port is longer than a Unix socket path may be (107 bytes); choose a shorter --state" >&2
        return 1
    fi
    if [ "$home" = "$state" ]; then log=$state/logs/postgres.log; else log=$home/postgres.log; fi
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data"
        [ "$(id -u)" = 0 ] && chown postgres: "$data"
        [ "$home" != "$state" ] && chown postgres: "$home" "$(dirname "$home")"
        as_postgres "$pg_bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$state/logs/initdb.log" 2>&1 ||
            { echo "initdb failed; see $state/logs/initdb.log" >&2; return 1; }
    fi
    if [ "$home" != "$state" ]; then
        ln -sfn "$data" "$state/pg"
        ln -sfn "$log" "$state/logs/postgres.log"
    fi
    mkdir -p "$sock"
    chmod 0700 "$sock"
    [ "$(id -u)" = 0 ] && chown postgres: "$sock" "$state/logs"
    if ! as_postgres "$pg_bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_postgres "$pg_bin/pg_ctl" -D "$data" -l "$log" -w -t 60 \
            -o "-p $port -c listen_addresses='' -c unix_socket_directories='$sock'" start >/dev/null ||
            { echo "PostgreSQL did not start; see $log" >&2; return 1; }
    fi
    psql -X -h "$sock" -p "$port" -U postgres -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'tds'" | grep -q 1 ||
        psql -X -h "$sock" -p "$port" -U postgres -d postgres -qc "CREATE DATABASE tds"
}

pg_url() { # state port: the libpq URL of the tds database, through the cluster's socket
    local dir
    dir=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe="/"))' "$(pg_home "$1")/pgsock")
    echo "postgresql://postgres@/tds?host=$dir&port=$2"
}

stop_postgres() { # state
    local data
    data=$(pg_home "$1")/pg
    [ -f "$data/PG_VERSION" ] && as_postgres "$pg_bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
}

# A pid file holds "PID START": START (field 22 of /proc/PID/stat, the process's
# start time) tells the process started here from a later one given the same
# pid (after a reboot, or once the pid is reused).
proc_start() { # pid: its start time; fails if it no longer runs
    local stat f
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    read -r -a f <<<"${stat##*\)}" # after the last ')': the name may hold anything
    [ "${f[0]:-Z}" != Z ] || return 1 # exited, not yet reaped
    echo "${f[19]}"
}

record_pid() { # pidfile pid
    echo "$2 $(proc_start "$2" || echo -)" >"$1"
}

running_pid() { # pidfile: prints its pid if that process still runs (the same one)
    local pid='' start='' exe
    read -r pid start _ 2>/dev/null <"$1" || [ -n "$pid" ] || return 1
    [[ "$pid" =~ ^[1-9][0-9]*$ ]] || return 1
    if [ -n "$start" ]; then
        [ "$(proc_start "$pid")" = "$start" ] || return 1
    else # written by an earlier version, the pid alone: only ever one of the project's binaries
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
        case "${exe##*/}" in tds-*) ;; *) return 1 ;; esac
    fi
    echo "$pid"
}

start_bg() { # state name cmd args...
    local state=$1 name=$2; shift 2
    "$@" >"$state/logs/$name.log" 2>&1 &
    record_pid "$state/run/$name.pid" $!
}

start_stage() { # state name binary admin_port VAR=value...
    local state=$1 name=$2 binary=$3 admin=$4; shift 4
    echo "$admin" >"$state/run/$name.admin"
    env "$@" TDS_ADMIN_LISTEN="127.0.0.1:$admin" "$binary" >"$state/logs/$name.log" 2>&1 &
    record_pid "$state/run/$name.pid" $!
}

wait_http() { # url seconds what [pidfile]
    local i
    for i in $(seq 1 $(($2 * 10))); do
        curl -fs -o /dev/null "$1" && return 0
        if [ -n "${4:-}" ] && ! running_pid "$4" >/dev/null; then
            echo "$3 exited; the end of its log:" >&2
            tail -5 "$state/logs/$3.log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "timed out waiting for $3 ($1); see the logs in $state/logs" >&2
    return 1
}

check_ports_free() { # port...
    python3 - "$@" <<'PYEOF'
import socket, sys
busy = []
ports = list(map(int, sys.argv[1:]))
bad = [p for p in ports if not 0 < p < 65536]
if bad:
    print("ports out of range: " + " ".join(map(str, bad)) + " (choose another --port-base)", file=sys.stderr)
    sys.exit(1)
for p in ports:
    s = socket.socket()
    # As the servers do: connections of a previous run in TIME_WAIT do not count.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        busy.append(p)
    finally:
        s.close()
if busy:
    print("ports in use: " + " ".join(map(str, busy)) + " (choose another --port-base)", file=sys.stderr)
    sys.exit(1)
PYEOF
}

sim_post() { # port path json
    curl -fsS -X POST -H 'Content-Type: application/json' -d "$3" "http://127.0.0.1:$1$2" >/dev/null
}

org_ids_of() { # orgs.json
    python3 -c 'import json,sys; print(" ".join(o["org_id"] for o in json.load(open(sys.argv[1]))["organizations"]))' "$1"
}

write_demo_orgs() { # file sim_port norgs
    python3 - "$1" "$2" "$3" <<'PYEOF'
import json, sys
path, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
url = f"http://127.0.0.1:{port}"
def org(oid, name, tz):
    return {"org_id": oid, "name": name, "product": "inventory", "data_center": "com",
            "accounts_url": url, "api_url": None,
            "client_id": "1000.SIMCLIENT", "client_secret": "simsecret",
            "refresh_token": "1000.simrefresh", "webhook_secrets": ["demo-webhook-secret"],
            "timezone_offset": tz, "rate_per_min": 100000, "max_concurrency": 10,
            "daily_limit": 10000000, "daily_reserve": 500,
            "incremental_every_s": 300, "reconcile_every_s": 86400}
orgs = [org("60001", "Demo Store", "+0300")]
if n == 2:
    # the simulator's second organization has moved to Locations
    orgs.append(dict(org("60002", "Demo Distributor", "+0530"), stock_sites="locations"))
json.dump({"organizations": orgs}, open(path, "w"), indent=2)
PYEOF
}

# The simulator is new on every demo run: tokens cached by the last one point at
# its old address and are unknown to it. Only the demo organizations' are
# removed: a real organization's, stored by a run with TDS_CONFIG on the same
# state folder, stay.
forget_demo_tokens() { # url demo-orgs.json
    local ids
    ids=$(org_ids_of "$2") || return 1
    psql -X -q -v ON_ERROR_STOP=1 -v ids="$ids" "$1" >/dev/null <<'SQL'
SELECT to_regclass('tds.oauth_tokens') IS NOT NULL AS has_tokens \gset
\if :has_tokens
DELETE FROM tds.oauth_tokens WHERE org_id = ANY (string_to_array(:'ids', ' '));
\endif
SQL
}
