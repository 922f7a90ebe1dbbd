#!/bin/bash
# usage: BEFORE=bin/old AFTER=bin/new scripts/bench-compare.sh OUTDIR
# Alternating before/after mxbench runs (fanout, serial; 3 pairs; SQLite then
# PostgreSQL), each on a new server and data directory; see BENCHMARKS.md.
# Needs /tmp/mxbench (cd ../shared/mxbench && go build -o /tmp/mxbench .).
# PAIRS (default 3), STORES (default "sqlite pg"), SCENARIOS (default
# "fanout serial") and EXTRA (more mxbench flags, e.g. "-messages 500")
# narrow a run.
set -u
OUT=$1; mkdir -p $OUT
run() { # name bin store scenario-flags...
  local name=$1 bin=$2 store=$3; shift 3
  local DIR=$(mktemp -d)
  if [ $store = pg ]; then
    local dbn=bench_$(date +%s%N)
    psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $dbn" >/dev/null
    export ENCLAVE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$dbn?sslmode=disable"
  else
    unset ENCLAVE_DATABASE_URL
  fi
  ENCLAVE_REGISTRATION_SHARED_SECRET=benchsecret ENCLAVE_RATE_LIMITS_ENABLED=false ENCLAVE_LOG_LEVEL=warn \
    $bin serve --data $DIR >$OUT/$name.log 2>&1 &
  local PID=$!
  for i in $(seq 1 100); do curl -sf http://127.0.0.1:8008/_matrix/client/versions >/dev/null && break; sleep 0.2; done
  /tmp/mxbench -hs http://127.0.0.1:8008 -secret benchsecret -pid $PID -json $OUT/$name.json "$@" >$OUT/$name.txt 2>&1
  kill $PID; wait $PID 2>/dev/null
  rm -rf $DIR
  [ $store = pg ] && psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE $dbn" >/dev/null
  sleep 5
}
for store in ${STORES:-sqlite pg}; do
  for scen in ${SCENARIOS:-fanout serial}; do
    for pair in $(seq 1 ${PAIRS:-3}); do
      run ${store}_${scen}_${pair}_before ${BEFORE:?set BEFORE to the before binary} $store -scenario $scen ${EXTRA:-}
      run ${store}_${scen}_${pair}_after ${AFTER:?set AFTER to the after binary} $store -scenario $scen ${EXTRA:-}
    done
  done
done
echo done > $OUT/DONE
