# Shared helpers for scripts/test and scripts/demo: install what the build needs on Debian or
# Ubuntu when we can (root, or passwordless sudo), and say exactly what to install when we can't.

cinder_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

# Debian packages the build and the tests need (tmux: the end-to-end UI test, tests/tui_tmux.rs).
CINDER_APT_PACKAGES=(pkg-config libssl-dev python3 python3-venv python3-pip tmux)

missing_apt_packages() {
  local missing=()
  command -v dpkg-query >/dev/null 2>&1 || return 0
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]:-}"
}

ensure_apt_packages() {
  local missing
  missing=$(missing_apt_packages "$@")
  [ -z "$missing" ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "cinder: missing system packages: $missing" >&2
      echo "cinder: install them with: sudo apt-get install -y $missing" >&2
      return 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "cinder: missing system packages: $missing (install them with your package manager)" >&2
    return 1
  fi
  echo "cinder: installing system packages: $missing" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cinder: cargo not found; install the Rust toolchain (https://rustup.rs) first" >&2
    return 1
  fi
}
