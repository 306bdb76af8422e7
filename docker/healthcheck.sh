#!/bin/sh
# The image's health check: /api/health answers 200 (MongoDB reachable) on
# the address of FOKO_LISTEN, from inside the container.
set -eu
listen=${FOKO_LISTEN:-8080}
port=${listen##*:}
host=${listen%:*}
case $host in
    "$listen" | '*' | 0.0.0.0) host=127.0.0.1 ;;
    '[::]') host='[::1]' ;;
esac
exec curl -fsS -o /dev/null --max-time 4 "http://$host:$port/api/health"
