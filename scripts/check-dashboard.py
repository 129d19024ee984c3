#!/usr/bin/env python3
"""Checks a Grafana dashboard JSON file two ways (run by scripts/check-deploy.sh):

1. against Grafana's own dashboard schema: the TypeScript types of npm's @grafana/schema
   (generated from Grafana's CUE schema), with `tsc --noEmit` on the dashboard as a literal
   that `satisfies Dashboard`: an unknown field, a wrong type or a bad enum value fails;
2. what the schema cannot say: schemaVersion current for that Grafana, unique panel ids,
   every panel with a datasource from the import inputs and at least one query.

Panel queries are run against a real Prometheus and PostgreSQL by the Rust test
`crates/hookrelay/tests/observability.rs`.
"""
import json
import os
import subprocess
import sys

GRAFANA_SCHEMA = "13.2.3"  # @grafana/schema of Grafana 13.2
CURRENT_SCHEMA_VERSION = 42  # what that Grafana writes
TOOLS = os.path.join(os.path.dirname(__file__), "..", "target", "deploy-tools", "grafana")


def fail(message):
    print(f"dashboard: {message}", file=sys.stderr)
    sys.exit(1)


def structure(dashboard):
    if dashboard.get("schemaVersion") != CURRENT_SCHEMA_VERSION:
        fail(f"schemaVersion {dashboard.get('schemaVersion')}, current is {CURRENT_SCHEMA_VERSION}")
    inputs = {f"${{{i['name']}}}" for i in dashboard.get("__inputs", [])}
    ids = set()
    queries = 0
    for panel in dashboard["panels"]:
        if panel["id"] in ids:
            fail(f"panel id {panel['id']} twice")
        ids.add(panel["id"])
        if panel["type"] == "row":
            continue
        if panel["datasource"]["uid"] not in inputs:
            fail(f"panel {panel['title']!r}: datasource {panel['datasource']['uid']} is not an import input")
        if not panel["targets"]:
            fail(f"panel {panel['title']!r} has no query")
        for target in panel["targets"]:
            if not (target.get("expr") or target.get("rawSql")):
                fail(f"panel {panel['title']!r}, query {target['refId']}: empty")
            queries += 1
    return len(ids), queries


def schema(dashboard):
    os.makedirs(TOOLS, exist_ok=True)
    if not os.path.isdir(os.path.join(TOOLS, "node_modules", "@grafana", "schema")):
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", TOOLS,
             f"@grafana/schema@{GRAFANA_SCHEMA}", "typescript@5"],
            check=True,
        )
    literal = {k: v for k, v in dashboard.items() if k not in ("__inputs", "__requires")}
    check = os.path.join(TOOLS, "check.ts")
    with open(check, "w") as f:
        f.write("import type { Dashboard } from '@grafana/schema';\n")
        f.write(f"const dashboard = {json.dumps(literal, indent=1)} satisfies Dashboard;\n")
        f.write("export default dashboard;\n")
    tsc = os.path.join(TOOLS, "node_modules", ".bin", "tsc")
    done = subprocess.run(
        [tsc, "--noEmit", "--strict", "--skipLibCheck", "--module", "esnext",
         "--moduleResolution", "bundler", check],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        fail(f"does not match @grafana/schema {GRAFANA_SCHEMA}:\n{done.stdout}{done.stderr}")


def main():
    path = sys.argv[1]
    dashboard = json.load(open(path))
    panels, queries = structure(dashboard)
    schema(dashboard)
    print(f"{path}: {panels} panels, {queries} queries; matches @grafana/schema {GRAFANA_SCHEMA} "
          f"(schemaVersion {CURRENT_SCHEMA_VERSION})")


if __name__ == "__main__":
    main()
