# deploy/packages.sh — the Debian packages the project needs, and one function
# that installs the missing ones (apt-get update first, only when something is
# missing). Sourced by deploy/local/up, tests/run and tests/bench/run.

TDS_BUILD_PACKAGES=(
    gcc pkg-config meson ninja-build
    libzmq3-dev libmsgpack-dev libjansson-dev libpq-dev
    libcurl4-openssl-dev libssl-dev libmicrohttpd-dev
)
# ca-certificates: the fetcher's calls to Zoho verify its TLS certificate
# (libcurl only recommends the package, and installs go without recommends)
TDS_RUN_PACKAGES=(postgresql-15 postgresql-client-15 curl python3 ca-certificates)
TDS_TEST_PACKAGES=(
    "${TDS_RUN_PACKAGES[@]}"
    python3-pytest python3-pytest-xdist python3-psycopg2 python3-zmq python3-msgpack python3-yaml
    wrk kubernetes-client docker-compose prometheus
)

tds_install_packages() {
    local missing=() p
    for p in "$@"; do
        # Any kubectl will do for `kubectl kustomize`; Debian's kubernetes-client
        # conflicts with a kubectl package that may already be there.
        [ "$p" = kubernetes-client ] && command -v kubectl >/dev/null 2>&1 && continue
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
        return 1
    fi
    echo "== installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || { echo "apt-get update failed" >&2; return 1; }
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/tds-apt.log 2>&1 || {
        echo "apt-get install failed; see /tmp/tds-apt.log" >&2; tail -20 /tmp/tds-apt.log >&2
        return 1
    }
    # Debian's prometheus package starts a server on every interface (:9090, no
    # authentication) at install and at each boot; the project wants only its
    # promtool and starts its own Prometheus where it needs one. Only when this
    # install brought it, and systemd runs.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus >/dev/null 2>&1 &&
            echo "   (the prometheus service Debian enabled is disabled: only promtool is used)"
    fi
    return 0
}
