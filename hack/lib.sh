# Shared helpers for the hack/ scripts. Source it; it defines no side effects of its own.
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$HACK_DIR/versions.env"
WSO_CACHE=${WSO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wml-stream-operator}
WSO_BIN=$WSO_CACHE/bin
mkdir -p "$WSO_BIN"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed: $2"; }

# Runs a long command with its output in a log file, printing elapsed time every 30 s so a user
# watching `make demo` knows it is alive; shows the log's tail if it fails.
run_with_progress() {
  local what=$1 logfile=$2; shift 2
  local start=$SECONDS
  log "$what (log: $logfile)"
  "$@" >"$logfile" 2>&1 &
  local pid=$! last=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    if (( SECONDS - last >= 30 )) && kill -0 "$pid" 2>/dev/null; then
      last=$SECONDS
      log "  $what: $((SECONDS - start)) s elapsed"
    fi
  done
  if ! wait "$pid"; then
    tail -n 40 "$logfile" >&2
    die "$what failed after $((SECONDS - start)) s; see $logfile"
  fi
  log "$what: done in $((SECONDS - start)) s"
}

# Installs Debian packages once, as root, with the output in a log: `apt_install LOGNAME package...`.
apt_install() {
  local logname=$1; shift
  command -v apt-get >/dev/null 2>&1 || die "$* missing and apt-get is not available: install them"
  [ "$(id -u)" -eq 0 ] || die "$* missing: run 'apt-get install $*' as root"
  mkdir -p "$WSO_CACHE/logs"
  run_with_progress "apt-get install $*" "$WSO_CACHE/logs/$logname.log" \
    bash -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $*"
}
