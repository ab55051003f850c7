#!/usr/bin/env bash
# Builds the ExpertMesh image with podman (or buildah) from deploy/image/Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
  cat <<'EOF'
usage: deploy/image/build.sh [--variant cpu|cuda] [--tag IMAGE] [--local-base] [--node-image IMAGE] [--runtime-image IMAGE]
                             [--extra-ca-certs FILE] [--no-cache]
  --variant cpu     onnxruntime's CPU build (default); tag expertmesh:cpu
  --variant cuda    lets onnxruntime-node's install script fetch its CUDA 12 execution provider at build time and
                    starts the runtime from a CUDA 12 + cuDNN 9 runtime image (--runtime-image, default
                    docker.io/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04); tag expertmesh:cuda
  --local-base      build the Node base from Debian packages first (deploy/image/build-base.sh), for hosts that
                    cannot pull docker.io/library/node:20-bookworm-slim
  --extra-ca-certs FILE  CA certificates npm must also trust (a TLS-inspecting proxy's), passed as a build secret;
                    defaults to $NODE_EXTRA_CA_CERTS when that is set
  --no-cache        rebuild every layer
  Environment: CONTAINER_RUNTIME (an OCI runtime for podman, e.g. runc), BUILD_NETWORK (default host).
EOF
}

VARIANT=cpu
TAG=""
LOCAL_BASE=0
NODE_IMAGE=docker.io/library/node:20-bookworm-slim
RUNTIME_IMAGE=""
EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS:-}
NO_CACHE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) VARIANT=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    --local-base) LOCAL_BASE=1; shift ;;
    --node-image) NODE_IMAGE=$2; shift 2 ;;
    --runtime-image) RUNTIME_IMAGE=$2; shift 2 ;;
    --extra-ca-certs) EXTRA_CA_CERTS=$2; shift 2 ;;
    --no-cache) NO_CACHE=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$VARIANT" in
  cpu) ORT_INSTALL=skip; RUNTIME_IMAGE=${RUNTIME_IMAGE:-$NODE_IMAGE} ;;
  cuda) ORT_INSTALL=cuda12; RUNTIME_IMAGE=${RUNTIME_IMAGE:-docker.io/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04} ;;
  *) echo "build.sh: --variant is cpu or cuda, not $VARIANT" >&2; exit 2 ;;
esac
TAG=${TAG:-expertmesh:$VARIANT}
command -v podman >/dev/null || { echo "build.sh: podman is missing (apt-get install podman)" >&2; exit 1; }

if [ "$LOCAL_BASE" = 1 ]; then
  local_tag=$(deploy/image/build-base.sh)
  [ "$RUNTIME_IMAGE" = "$NODE_IMAGE" ] && RUNTIME_IMAGE=$local_tag
  NODE_IMAGE=$local_tag
fi

# Hosts without CAP_SYS_RESOURCE (some VMs and CI sandboxes) cannot raise the limits podman sets by default
# (1048576 open files, 4194304 processes): ask for no more than this shell has, and at most 32768 processes.
podman_args=()
[ -n "${CONTAINER_RUNTIME:-}" ] && podman_args+=(--runtime "$CONTAINER_RUNTIME")
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ] && nofile=1048576
[ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
build_args=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
[ -n "$EXTRA_CA_CERTS" ] && build_args+=(--secret "id=extra-ca-certs,src=$EXTRA_CA_CERTS")
[ "$NO_CACHE" = 1 ] && build_args+=(--no-cache)

start=$(date +%s)
podman "${podman_args[@]}" build -f deploy/image/Dockerfile -t "$TAG" \
  --network "${BUILD_NETWORK:-host}" "${build_args[@]}" \
  --build-arg NODE_IMAGE="$NODE_IMAGE" --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" \
  --build-arg ONNXRUNTIME_NODE_INSTALL="$ORT_INSTALL" .
seconds=$(( $(date +%s) - start ))
size=$(podman image inspect "$TAG" --format '{{.Size}}')
echo "{\"event\":\"built\",\"image\":\"$TAG\",\"variant\":\"$VARIANT\",\"node_image\":\"$NODE_IMAGE\",\"runtime_image\":\"$RUNTIME_IMAGE\",\"seconds\":$seconds,\"bytes\":$size}"
