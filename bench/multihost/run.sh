#!/bin/bash
# bench/multihost: cross-host against same-host delivery over three nginx
# hosts, one Redis and one FerretDB, all on loopback.  Bounded in time:
# every wait in multihost.pl has a deadline, and the whole run is killed
# after LIMIT seconds (600).
#
#   MEMBERS=90 RATES=5,20,50 DURATION=10 bench/multihost/run.sh
#   HOSTS=1,3 ...    the same load on one host alone (no Redis), then on
#                    three, each on a FerretDB of its own started afresh
#
# One JSON line per rate step goes to bench/results/multihost-<date>.jsonl
# (RESULTS to change it; with several HOSTS, one file each, ending in
# -hosts-N.jsonl); the summary lines are printed as notes.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
: "${RESULTS:=$root/bench/results/multihost-$(date -u +%Y%m%d-%H%M%S).jsonl}"
: "${TEST_NGINX_SERVER_PORT:=$((20000 + RANDOM % 20000))}"
export RESULTS TEST_NGINX_SERVER_PORT
mkdir -p "$(dirname "$RESULTS")"

cd "$root"
IFS=, read -ra counts <<< "${HOSTS:-3}"
all=$RESULTS
for n in "${counts[@]}"; do
    if [ "${#counts[@]}" -gt 1 ]; then
        RESULTS=${all%.jsonl}-hosts-$n.jsonl
    fi
    echo "# $n host(s)"
    HOSTS=$n RESULTS=$RESULTS timeout "${LIMIT:-600}" \
        scripts/test.sh -v bench/multihost/multihost.pl 2>&1 \
        | grep -E '^# |^not ok|^Result|^ok .*(Redis|connected|members)'
    echo "results: $RESULTS"
done
