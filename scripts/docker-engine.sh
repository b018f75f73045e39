#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`; start one if not.
#
# Idempotent: if `docker info` already works, nothing is done. Otherwise the
# docker.io package is installed with apt (once, non-interactively) when no
# dockerd is on PATH, dockerd is started in the background (log and pidfile
# under $KFX_DOCKER_STATE, default /var/run/kfx-dockerd) and the script waits
# up to $KFX_DOCKER_TIMEOUT seconds (default 60) for the engine to answer.
#
# Works as root on a fresh Debian 12 machine and in CI (no stdin, no tty).
set -euo pipefail

STATE_DIR="${KFX_DOCKER_STATE:-/var/run/kfx-dockerd}"
TIMEOUT="${KFX_DOCKER_TIMEOUT:-60}"
LOG="${STATE_DIR}/dockerd.log"
PIDFILE="${STATE_DIR}/launched.pid"   # our record; dockerd keeps its own /var/run/docker.pid

say() { echo "docker-engine: $*" >&2; }

engine_up() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_up; then
  say "engine already answers (server $(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  say "ERROR: no Docker engine answers and starting one needs root (uid is $(id -u))"
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  say "dockerd not found: installing docker.io with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends docker.io iptables ca-certificates </dev/null >/dev/null
fi
if ! command -v docker >/dev/null 2>&1; then
  say "ERROR: no docker client on PATH after installing docker.io"
  exit 1
fi

mkdir -p "$STATE_DIR"
# A dockerd we started earlier may still be coming up: don't start a second one.
if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  say "dockerd already running (pid $(cat "$PIDFILE")), waiting for it"
else
  say "starting dockerd (log: $LOG)"
  # setsid + nohup: the daemon outlives this script and any CI step shell.
  setsid nohup dockerd >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
fi

deadline=$(( $(date +%s) + TIMEOUT ))
until engine_up; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    say "ERROR: Docker engine did not answer within ${TIMEOUT}s; last lines of $LOG:"
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
  if [ -s "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    say "ERROR: dockerd exited; last lines of $LOG:"
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
  sleep 1
done
say "engine up (server $(docker version -f '{{.Server.Version}}'))"
