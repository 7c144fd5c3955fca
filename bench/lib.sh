# bench/lib.sh — what bench/init/run, bench/reload/run and bench/canary/run share.
# Sourced, not run. The caller sets NAME (the log prefix), and, for these
# functions, INSTALL (1: apt-get install what is missing) and NETNS (1: each
# measurement in a network namespace of its own).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[bench/%s] %s\n' "$NAME" "$*" >&2; }
die() { echo "run: $*" >&2; exit 1; }

# apt_install PKG...: installs the Debian packages, or fails saying why not.
apt_install() {
  [ $# -gt 0 ] || return 0
  [ "$INSTALL" = 1 ] || die "missing $* (and --no-install)"
  { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; } || die "missing $*; installing needs root and apt-get"
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# netns_setup: each measurement in a network namespace of its own, loopback
# up. The host's conntrack (loaded by docker, say) would track every loopback
# connection and, at these connection rates, fill its table and drop SYNs
# (measured: "nf_conntrack: table full, dropping packet"); TIME_WAIT sockets
# and ephemeral ports would be shared with whatever else runs. Sets NETNS_TEXT.
netns_setup() {
  if [ "$NETNS" = 1 ] && { [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null || ! command -v ip >/dev/null; }; then
    log "warning: not root, or no unshare/ip: measuring in the host's network namespace"
    NETNS=0
  fi
  NETNS_TEXT="each measurement in a fresh network namespace (unshare --net, loopback only)"
  [ "$NETNS" = 1 ] || NETNS_TEXT="in the host's network namespace (--no-netns or not root)"
}
inns() {
  if [ "$NETNS" = 1 ]; then
    unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh "$@"
  else
    "$@"
  fi
}

# load_check: sets LOAD_BEFORE and NPROC, and warns when the machine is busy.
load_check() {
  LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
  NPROC=$(nproc)
  if awk -v l="${LOAD_BEFORE%% *}" -v n="$NPROC" 'BEGIN { exit !(l > n) }'; then
    log "warning: load average $LOAD_BEFORE on $NPROC cores: other work will skew the figures"
  fi
}

# revision: baton's git revision, marked when the tree has uncommitted changes.
revision() {
  local rev
  rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
  [ -z "$(cd "$ROOT" && git --no-optional-locks status --porcelain 2>/dev/null | head -1)" ] || rev="$rev (uncommitted changes)"
  echo "$rev"
}

# build_bench OUT PKG: builds a measuring helper of the bench module.
build_bench() { (cd "$ROOT/bench" && CGO_ENABLED=0 go build -trimpath -o "$1" "$2") || die "go build of bench/$2 failed"; }
