#!/usr/bin/env bash
# The programs the tests drive besides PostgreSQL and RabbitMQ, installed when missing (`make
# test` runs this first; each check is instant once installed):
#   - Debian: chromium + chromium-driver (the console's browser test), prometheus (the
#     dashboard and alert test runs a real Prometheus; promtool checks the rules);
#   - PyPI, into the project's .venv (never the machine's Python): the example receiver's and
#     publisher's libraries (standardwebhooks, pika), schemathesis (the OpenAPI test) and
#     openapi-spec-validator (the receivers' document test); the
#     Makefile puts .venv/bin first on PATH for the tests;
#   - npm: the example Node receiver's (`npm ci`, from its lock file).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/tools.sh
. scripts/tools.sh
need_debian '[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]' chromium chromium-driver
need_debian 'command -v prometheus && command -v promtool' prometheus
need_pip "\"\$VENV/bin/python3\" -c 'import standardwebhooks, pika'" \
    -r examples/receivers/python/requirements.txt -r examples/publishers/python/requirements.txt
need_pip '[ -x "$VENV/bin/schemathesis" ]' schemathesis==4.32.5
need_pip '[ -x "$VENV/bin/openapi-spec-validator" ]' openapi-spec-validator==0.9.0

lock=examples/receivers/node/package-lock.json
stamp=examples/receivers/node/node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ]; then
    command -v npm >/dev/null 2>&1 || { echo "npm is missing (Node.js 18 or newer)" >&2; exit 1; }
    echo "installing the Node example's libraries (npm ci)"
    (cd examples/receivers/node && npm ci --silent --no-audit --no-fund)
fi
