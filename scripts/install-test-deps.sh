#!/usr/bin/env bash
# Installs the real servers and clients that the end-to-end tests drive:
# PostgreSQL (postgres, initdb, psql, pgbench), OpenSSH (sshd, ssh, scp)
# socat and curl (through the SOCKS port). Safe to run again: it installs only what is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null; }
have initdb   || need+=(postgresql)
have pgbench  || need+=(postgresql-contrib)
have psql     || need+=(postgresql-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
have ssh      || need+=(openssh-client)
have socat    || need+=(socat)
have curl     || need+=(curl)

if [ ${#need[@]} -eq 0 ]; then
  echo "test dependencies: all present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "test dependencies: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
