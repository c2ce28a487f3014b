#!/bin/sh
# The servers and tools the test suite reads our outputs with, from Debian's packages:
# PostgreSQL and MariaDB (the generator's SQL loads into both), Prometheus's promtool (the
# metrics and the dashboard's queries). Installs only what is missing; as root or via sudo.
# Without apt-get it says what to install: those tests then skip, saying why (fail under CI).
set -eu
missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing="$missing mariadb-server"
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$missing postgresql"
command -v sqlite3 >/dev/null 2>&1 || missing="$missing sqlite3"
# bfd.service's SystemCallFilter= checked against what bfd calls (tests/test_sandbox.py):
# systemd-analyze lists the unit's syscall groups, strace records every call.
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v strace >/dev/null 2>&1 || missing="$missing strace"
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/tools.sh: no apt-get; install$missing yourself (those tests skip without them)" >&2
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "tests/tools.sh: installing$missing (Debian packages)" >&2
$sudo apt-get update -qq
# No daemon of theirs starts: the tests start their own servers on temp dirs.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
