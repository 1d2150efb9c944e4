#!/usr/bin/env bash
# The test command: makes sure the programs the tests drive are installed (installing
# the Debian packages when it runs as root with apt-get, otherwise saying in one line
# what is missing and how to get it), then runs every test. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package that provides it. gcc/g++/libc6-dev: the C and C++ test
# programs; binutils: nm; strace: the hot-path syscall test; tmux: tt-smi in a real
# terminal; python3: socket and Python clients; prometheus (with promtool): the real
# server the metrics endpoint is scraped by; util-linux: setpriv, to run attackers as
# another user; systemd: systemd-analyze, to verify the unit in contrib/systemd;
# chromium (and a font for it): the recording's HTML page loaded headless.
declare -A PKG=(
  [cc]=gcc [gcc]=gcc [g++]=g++ [nm]=binutils [strace]=strace [tmux]=tmux
  [python3]=python3 [prometheus]=prometheus [promtool]=prometheus [setpriv]=util-linux
  [systemd-analyze]=systemd [chromium]=chromium [flock]=util-linux
)
missing_pkgs=()
missing_cmds=()
for cmd in "${!PKG[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    missing_cmds+=("$cmd")
    missing_pkgs+=("${PKG[$cmd]}")
  fi
done
# A font for the page's text in headless Chromium.
if [ ! -d /usr/share/fonts/truetype/liberation ]; then
  missing_cmds+=("a font")
  missing_pkgs+=(fonts-liberation)
fi
# The C headers the test programs include.
if [ ! -e /usr/include/stdio.h ]; then
  missing_cmds+=("stdio.h")
  missing_pkgs+=(libc6-dev)
fi

if [ ${#missing_pkgs[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing_pkgs[@]}" | sort -u | tr '\n' ' ')
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${pkgs}(for ${missing_cmds[*]})" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  else
    echo "test.sh: missing ${missing_cmds[*]}; install them with: sudo apt-get install ${pkgs}" >&2
    exit 1
  fi
fi

# cargo-deb: the Debian package test builds the package with it (from crates.io).
if ! cargo deb --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-deb (cargo install cargo-deb --version 3.8.0 --locked)" >&2
  cargo install cargo-deb --version 3.8.0 --locked --quiet
fi

# The Python package and pytest, in a virtual environment of the tests' own
# (tests/python.rs runs real pytest in it): pip builds the extension with maturin.
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  else
    echo "test.sh: python3 cannot make virtual environments; install python3-venv" >&2
    exit 1
  fi
fi
venv=target/python-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
echo "test.sh: installing the Python package into $venv (pip install pytest ./python)" >&2
# The extension is built by maturin with python/Cargo.lock; into a target directory of
# its own, whatever CARGO_TARGET_DIR says: in a directory shared with the main build
# (a common set-up), the other lock file's versions of the same crates (serde_core)
# sat beside the main build's and broke its next `cargo build` ("multiple different
# versions of crate").
CARGO_TARGET_DIR="$PWD/target/python-ext" \
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check pytest ./python
export TTTRACK_TEST_VENV="$PWD/$venv"

exec cargo test "$@"
