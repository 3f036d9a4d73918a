#!/usr/bin/env bash
# The demo on the local cluster (after `make cluster images`): install the CRDs and the operator
# from its image, apply examples/ to namespace clinic-a, wait until the operator has reconciled
# every object, and show what a user sees.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
export KUBECONFIG=$REPO_ROOT/.cluster/kubeconfig
export PATH=$REPO_ROOT/.cluster/bin:$PATH
cd "$REPO_ROOT"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established crd -l app.kubernetes.io/part-of=securemodel --timeout=60s >/dev/null
kubectl apply -f deploy/ >/dev/null
# The image tag stays :dev across rebuilds: restart so the operator runs the image just built.
kubectl -n securemodel-system rollout restart deployment/securemodel-operator >/dev/null
step kubectl -n securemodel-system rollout status deployment/securemodel-operator --timeout=180s
kubectl create namespace clinic-a --dry-run=client -o yaml | kubectl apply -f - >/dev/null
step kubectl apply -n clinic-a -f examples/
kubectl wait -n clinic-a --for=jsonpath='{.status.observedGeneration}'=1 pbudget,smodel,fround --all --timeout=120s >/dev/null
step kubectl get securemodel -n clinic-a
step kubectl get events -n clinic-a --field-selector involvedObject.kind=SecureModel
