#!/usr/bin/env bash
# The programs the tests drive besides PostgreSQL and RabbitMQ, installed when missing (`make
# test` runs this first; each check is instant once installed):
#   - Debian: chromium + chromium-driver (the console's browser test), prometheus (the
#     dashboard and alert test runs a real Prometheus; promtool checks the rules);
#   - PyPI: the example receiver's and publisher's libraries (standardwebhooks, pika), and
#     schemathesis (the OpenAPI test);
#   - npm: the example Node receiver's (`npm ci`, from its lock file).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || missing+=(chromium chromium-driver)
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; } \
        || { echo "cannot install ${missing[*]}: run as root, or install them yourself" >&2; exit 1; }
fi

if ! python3 -c 'import standardwebhooks, pika' 2>/dev/null; then
    echo "installing the Python examples' libraries"
    python3 -m pip install -q -r examples/receivers/python/requirements.txt \
        -r examples/publishers/python/requirements.txt 2>&1 | grep -v '^WARNING' || true
    python3 -c 'import standardwebhooks, pika' \
        || { echo "cannot install standardwebhooks and pika from PyPI" >&2; exit 1; }
fi

if ! command -v schemathesis >/dev/null 2>&1; then
    echo "installing schemathesis (PyPI)"
    python3 -m pip install -q schemathesis==4.32.5 2>&1 | grep -v '^WARNING' || true
    command -v schemathesis >/dev/null 2>&1 || { echo "cannot install schemathesis from PyPI" >&2; exit 1; }
fi

lock=examples/receivers/node/package-lock.json
stamp=examples/receivers/node/node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ]; then
    command -v npm >/dev/null 2>&1 || { echo "npm is missing (Node.js 18 or newer)" >&2; exit 1; }
    echo "installing the Node example's libraries (npm ci)"
    (cd examples/receivers/node && npm ci --silent --no-audit --no-fund)
fi
