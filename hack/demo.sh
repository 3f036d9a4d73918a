#!/usr/bin/env bash
# The demo on the local cluster (after `make cluster images`): install the CRDs and the operator
# from its image, apply examples/ to namespace clinic-a, wait until the tumour classifier is
# trained with differential privacy, compressed and served, show what a user sees, and send it an
# inference request over mutual TLS from a Pod holding the client certificate the operator issued.
# Then clinics B and C join the federated round (examples/federated/): once it has succeeded, show
# each clinic's ε and the global accuracy, and ask the round's served global model the same way.
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
# Each run starts from fresh namespaces: a FederatedRound's spec is immutable, so a newer checkout's examples
# cannot be applied over an earlier run's. Only the namespaces a demo created (its label) go, with everything in
# them; their budgets first get the annotation that lets a ledger with spend be deleted, as a data steward's would.
DEMO_LABEL=securemodel.io/demo
earlier=()
for ns in clinic-a clinic-b clinic-c; do
  if [ "$(kubectl get namespace $ns -o jsonpath="{.metadata.labels.securemodel\.io/demo}" 2>/dev/null)" = true ]; then
    echo "deleting namespace $ns of an earlier demo run..."
    kubectl -n $ns annotate pbudget --all securemodel.io/allow-delete-with-spend=true --overwrite >/dev/null
    kubectl delete namespace $ns --wait=false >/dev/null
    earlier+=("namespace/$ns")
  fi
done
[ ${#earlier[@]} -eq 0 ] || kubectl wait --for=delete "${earlier[@]}" --timeout=300s >/dev/null
demo_namespace() {
  kubectl create namespace "$1" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl label namespace "$1" $DEMO_LABEL=true --overwrite >/dev/null
}
demo_namespace clinic-a
step kubectl apply -n clinic-a -f examples/
kubectl wait -n clinic-a --for=jsonpath='{.status.observedGeneration}'=1 pbudget,smodel,fround --all --timeout=120s >/dev/null
echo "waiting for the SecureModel to be trained, compressed and served (a few minutes)..."
kubectl wait -n clinic-a smodel/tumor-classifier --for=jsonpath='{.status.phase}'=Serving --timeout=900s >/dev/null
step kubectl get securemodel-all -n clinic-a
step kubectl get smodel tumor-classifier -n clinic-a -o jsonpath='{.status.privacy}{"\n"}{.status.model}{"\n"}'
step kubectl get events -n clinic-a --field-selector involvedObject.kind=SecureModel

# ask MODEL: an OIP request over mutual TLS from a Pod holding MODEL's client certificate "frontend".
ask() {
  local model=$1
  kubectl -n clinic-a delete pod demo-client --ignore-not-found >/dev/null
  kubectl -n clinic-a create configmap demo-client --from-file=infer.py=hack/demo-infer.py --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n clinic-a apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: demo-client}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, runAsUser: 65532, fsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: client
    image: securemodel-worker:dev
    imagePullPolicy: IfNotPresent
    command: [python, /demo/infer.py, "https://$model.clinic-a.svc:8443", $model]
    env: [{name: HOME, value: /tmp}]
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    volumeMounts:
    - {name: client, mountPath: /client, readOnly: true}
    - {name: code, mountPath: /demo, readOnly: true}
  volumes:
  - {name: client, secret: {secretName: $model-client-frontend}}
  - {name: code, configMap: {name: demo-client}}
YAML
  kubectl -n clinic-a wait pod/demo-client --for=jsonpath='{.status.phase}'=Succeeded --timeout=300s >/dev/null \
    || { kubectl -n clinic-a logs demo-client; exit 1; }
  step kubectl -n clinic-a logs demo-client
}
ask tumor-classifier

# The federated round of examples/federatedround.yaml: clinics B and C join with their own budgets.
demo_namespace clinic-b
demo_namespace clinic-c
step kubectl apply -f examples/federated/
echo "waiting for the federated round: 3 clinics, 4 rounds of FedAvg under SecAgg+ (a few minutes)..."
# Ready once the round succeeded and every silo's claim is settled (phase Succeeded comes a few seconds before).
kubectl wait -n clinic-a fround/tumor-classifier-round-1 --for=condition=Ready --timeout=1200s >/dev/null \
  || { kubectl get fround -n clinic-a tumor-classifier-round-1 -o yaml; exit 1; }
step kubectl get fround -n clinic-a
step kubectl get fround tumor-classifier-round-1 -n clinic-a -o jsonpath='{range .status.participants[*]}{.name}{" in "}{.namespace}{": epsilon spent "}{.epsilonSpent}{" of its budget "}{.budget}{"\n"}{end}{"global accuracy on the public evaluation data: "}{.status.model.accuracy}{"\n"}'

# Its global model, served like any SecureModel: nothing trained, nothing claimed (the clinics paid).
kubectl wait -n clinic-a smodel/tumor-classifier-federated --for=jsonpath='{.status.phase}'=Serving --timeout=600s >/dev/null
step kubectl get smodel tumor-classifier-federated -n clinic-a -o jsonpath='{.status.privacy}{"\n"}{.status.model}{"\n"}'
ask tumor-classifier-federated
