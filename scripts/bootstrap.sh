#!/usr/bin/env bash
# Set up a development environment for rserpool on Debian/Ubuntu.
#
#   scripts/bootstrap.sh        (or: make setup)
#
# Idempotent and non-interactive; safe to run on every `make test`:
#   1. apt packages (only if one is missing: then apt-get update + install),
#      as root or through sudo;
#   2. .venv with python3 (Python >= 3.10);
#   3. pip install -e '.[test]' (builds the Cython extensions in place),
#      skipped when pyproject.toml/setup.py are unchanged since the last run.
#
# Environment:
#   PYTHON=/path/to/python3   interpreter for the venv (default: python3)
#   VENV=.venv                where to put the venv
#   RSERPOOL_SKIP_APT=1       do not check/install system packages
#   RSERPOOL_FORCE_INSTALL=1  reinstall the project even if nothing changed
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
VENV=${VENV:-.venv}
STAMP="$VENV/.rserpool-bootstrap"

# Keep in sync with [build-system].requires in pyproject.toml.
BUILD_REQUIREMENTS=("setuptools>=69" "Cython>=3.0,<4" "wheel")
# user-mode-linux + kmod: a real kernel with SCTP for the sctp tests (scripts/uml/).
APT_PACKAGES=(python3-venv python3-dev build-essential tshark libsctp-dev iproute2 user-mode-linux kmod)

say() { printf '==> bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; [ $rc -eq 0 ] || printf "bootstrap: FAILED (exit %s)\n" "$rc" >&2' EXIT

# --- 1. system packages ----------------------------------------------------
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [ -t 0 ]; then sudo "$@"; else sudo -n "$@"; fi
    else
        die "need root or sudo to run: $*"
    fi
}

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

install_system_packages() {
    if [ "${RSERPOOL_SKIP_APT:-0}" = 1 ]; then
        say "RSERPOOL_SKIP_APT=1: not checking system packages"
        return
    fi
    if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        say "WARNING: not a Debian/Ubuntu system; install by hand: ${APT_PACKAGES[*]}"
        return
    fi
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "system packages present"
        return
    fi
    say "installing system packages: ${missing[*]}"
    # tshark asks whether non-root users may capture: answer no, never prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | as_root debconf-set-selections
    local apt_opts=(-y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=300
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install --no-install-recommends "${apt_opts[@]}" "${missing[@]}"
    for p in "${missing[@]}"; do
        pkg_installed "$p" || die "apt package $p did not install"
    done
}

# --- 2. virtualenv ---------------------------------------------------------
find_python() {
    local cand
    for cand in ${PYTHON:-} python3 python; do
        if command -v "$cand" >/dev/null 2>&1 \
            && "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
            command -v "$cand"
            return
        fi
    done
    die "no Python >= 3.10 found (set PYTHON=/path/to/python3)"
}

make_venv() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys, pip' >/dev/null 2>&1; then
        return
    fi
    local py
    py=$(find_python)
    [ -e "$VENV" ] && { say "removing broken $VENV"; rm -rf "$VENV"; }
    say "creating $VENV with $py ($("$py" -V 2>&1))"
    "$py" -m venv "$VENV" || die "'$py -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    rm -f "$STAMP"
}

# --- 3. project ------------------------------------------------------------
inputs_digest() {
    {
        "$VENV/bin/python" -VV
        cat pyproject.toml setup.py scripts/bootstrap.sh
    } | sha256sum | cut -d' ' -f1
}

install_project() {
    local digest
    digest=$(inputs_digest)
    if [ "${RSERPOOL_FORCE_INSTALL:-0}" != 1 ] && [ -f "$STAMP" ] \
        && [ "$(cat "$STAMP")" = "$digest" ] && [ -x "$VENV/bin/rserpool" ]; then
        say "$VENV up to date"
        return
    fi
    say "installing build tools into $VENV: ${BUILD_REQUIREMENTS[*]}"
    "$VENV/bin/python" -m pip install --quiet --upgrade "${BUILD_REQUIREMENTS[@]}"
    # No build isolation: the editable build uses the venv's Cython, the
    # same one `make build` (setup.py build_ext --inplace) uses later.
    say "pip install -e '.[test]' (compiles the Cython extensions in place)"
    "$VENV/bin/python" -m pip install --quiet --no-build-isolation -e '.[test]'
    echo "$digest" > "$STAMP"
}

unbuilt_extensions() {
    local pyx stem so
    shopt -s nullglob
    for pyx in _ext/rserpool/_c/*.pyx; do
        stem=$(basename "$pyx" .pyx)
        so=(rserpool/_c/"$stem".*so)
        [ ${#so[@]} -gt 0 ] || echo "$pyx"
    done
    shopt -u nullglob
}

check_extensions() {
    local missing
    missing=$(unbuilt_extensions)
    if [ -n "$missing" ]; then
        # e.g. a .pyx added since the last install: build it in place.
        say "building in place: $(echo $missing)"
        "$VENV/bin/python" setup.py --quiet build_ext --inplace
        missing=$(unbuilt_extensions)
        [ -z "$missing" ] || die "not built into rserpool/_c/: $(echo $missing)"
    fi
    "$VENV/bin/python" -c 'import rserpool' || die "rserpool does not import from $VENV"
}

install_system_packages
make_venv
install_project
check_extensions
say "ready: $ROOT/$VENV ($("$VENV/bin/python" -V 2>&1))"
