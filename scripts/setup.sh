#!/usr/bin/env bash
# Set up everything convcg runs on, on a fresh machine; a second run installs nothing.
#  1. redis-server (Debian's package) for the embedded online store, when missing and root;
#  2. the virtualenv .venv: torch first (pinned: PyPI's standard build, ~3 GB, runs on the CPU),
#     then convcg with its test extras;
#  3. Apache Kafka 4.4's jars from Maven Central (convcg/kafka/pom.xml) into .cache/, once.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing redis-server (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    # the package's own service is not used: convcg starts private servers on free ports
    service redis-server stop >/dev/null 2>&1 || true
  else
    echo "setup: no redis-server; install it (apt-get install -y redis-server) for the Redis online store," \
         "or convcg falls back to Feast's SQLite" >&2
  fi
fi
for tool in java mvn; do
  command -v "$tool" >/dev/null || echo "setup: no $tool on PATH: the embedded Apache Kafka needs Java 17+ and" \
                                        "Maven (apt-get install -y openjdk-17-jre-headless maven), or set KAFKA_BOOTSTRAP" >&2
done

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -c "import torch" 2>/dev/null || {
  python -m pip install -q --upgrade pip >/dev/null
  echo "setup: installing torch==2.13.0 (PyPI's standard build, ~3 GB)"
  python -m pip install -q torch==2.13.0
}
stamp=.venv/.convcg-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi
if command -v java >/dev/null && command -v mvn >/dev/null; then
  python -m convcg.kafka.distribution
fi
echo "setup: done in $(( $(date +%s) - started ))s"
