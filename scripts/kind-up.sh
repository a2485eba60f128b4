#!/usr/bin/env bash
# Quick start on a local kind cluster: cluster -> cert-manager + KServe (RawDeployment) -> Kubeflow Pipelines
# (standalone) -> project image built and loaded -> Secrets with a generated password -> manifests -> pipeline run.
# Needs: kind, kubectl, helm, docker or podman, and the project venv (make setup). Idempotent: rerun to resume.
# Versions can be overridden from the environment; the defaults are the releases this project was written for.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-recsys}
IMAGE=${RECSYS_IMAGE:-recsys:dev}
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.16.2}
KSERVE_VERSION=${KSERVE_VERSION:-v0.21.0}
KFP_VERSION=${KFP_VERSION:-2.17.0}
RUN_PIPELINE=${RUN_PIPELINE:-1}   # 0: stop after the manifests, submit no pipeline run
NS=recsys
KFP_NS=kubeflow

say() { printf '\n==> %s\n' "$*"; }
need() { command -v "$1" >/dev/null || { echo "error: $1 is not installed" >&2; exit 1; }; }
need kind
need kubectl
need helm
if command -v docker >/dev/null; then ENGINE=docker; elif command -v podman >/dev/null; then ENGINE=podman; else
  echo "error: neither docker nor podman is installed" >&2; exit 1
fi

say "kind cluster '$CLUSTER'"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config manifests/kind/kind-config.yaml
fi
kubectl config use-context "kind-$CLUSTER"

say "cert-manager $CERT_MANAGER_VERSION (KServe's webhooks need it)"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
kubectl wait --for=condition=Available deployment --all -n cert-manager --timeout=300s

say "KServe $KSERVE_VERSION (Helm charts), RawDeployment mode: no Knative or Istio"
helm upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd --version "$KSERVE_VERSION" \
  --namespace kserve --create-namespace --wait
helm upgrade --install kserve oci://ghcr.io/kserve/charts/kserve --version "$KSERVE_VERSION" \
  --namespace kserve --set kserve.controller.deploymentMode=RawDeployment --wait

say "Kubeflow Pipelines $KFP_VERSION (standalone)"
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$KFP_VERSION"
kubectl wait --for=condition=established crd/applications.app.k8s.io --timeout=120s
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$KFP_VERSION"
kubectl wait --for=condition=Available deployment --all -n "$KFP_NS" --timeout=900s

say "project image $IMAGE"
"$ENGINE" build -t "$IMAGE" -f Containerfile .
if [ "$ENGINE" = docker ]; then
  kind load docker-image "$IMAGE" --name "$CLUSTER"
else
  archive=$(mktemp --suffix=.tar); trap 'rm -f "$archive"' EXIT
  podman save -o "$archive" "$IMAGE" && kind load image-archive "$archive" --name "$CLUSTER"
fi

say "Secrets (values generated here, never written to the repository)"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
if ! kubectl get secret recsys-postgres -n "$NS" >/dev/null 2>&1; then
  password=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  dsn="postgresql://recsys:$password@recsys-postgres.$NS.svc.cluster.local:5432/recsys?sslmode=disable"
  for ns in "$NS" "$KFP_NS"; do  # pipeline step pods run in the kubeflow namespace
    kubectl create secret generic recsys-postgres -n "$ns" \
      --from-literal=POSTGRES_PASSWORD="$password" --from-literal=dsn="$dsn"
  done
fi
# the predictor's storage initializer reads models from KFP's MinIO with KFP's own credentials
access_key=$(kubectl get secret mlpipeline-minio-artifact -n "$KFP_NS" -o jsonpath='{.data.accesskey}' | base64 -d)
secret_key=$(kubectl get secret mlpipeline-minio-artifact -n "$KFP_NS" -o jsonpath='{.data.secretkey}' | base64 -d)
kubectl create secret generic recsys-model-storage -n "$NS" \
  --from-literal=AWS_ACCESS_KEY_ID="$access_key" --from-literal=AWS_SECRET_ACCESS_KEY="$secret_key" \
  --dry-run=client -o yaml \
  | kubectl annotate --local -f - -o yaml \
      serving.kserve.io/s3-endpoint="minio-service.$KFP_NS.svc.cluster.local:9000" \
      serving.kserve.io/s3-usehttps=0 serving.kserve.io/s3-region=us-east-1 \
  | kubectl apply -f -

say "manifests (Postgres, RBAC, NetworkPolicy, feast-apply Job, InferenceService)"
kubectl apply -k manifests/overlays/local
kubectl rollout status statefulset/recsys-postgres -n "$NS" --timeout=300s
kubectl wait --for=condition=Complete job/recsys-feast-apply -n "$NS" --timeout=600s

if [ "$RUN_PIPELINE" = 1 ]; then
  say "pipeline run (the deploy step points the InferenceService at the trained model)"
  kubectl port-forward -n "$KFP_NS" svc/ml-pipeline-ui 8888:80 >/dev/null 2>&1 &
  forward=$!; trap 'kill "$forward" 2>/dev/null || true' EXIT
  sleep 3
  RECSYS_IMAGE="$IMAGE" .venv/bin/recsys pipeline submit --host http://127.0.0.1:8888 --experiment recsys --wait
  kubectl wait --for=condition=Ready inferenceservice/recommender -n "$NS" --timeout=600s
fi

say "done"
cat <<MSG
Predictor:  kubectl port-forward -n $NS svc/recommender-predictor 8080:80
            curl -s localhost:8080/v1/models/recommender:predict -d '{"instances":[{"user_id":"u1","k":5}]}'
Pipelines:  kubectl port-forward -n $KFP_NS svc/ml-pipeline-ui 8888:80  ->  http://127.0.0.1:8888
MSG
