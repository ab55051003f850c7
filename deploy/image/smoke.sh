#!/usr/bin/env bash
# Runs `expertmesh up` inside a built image and asks it for a chat completion through the published port.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy/image/smoke.sh [--image expertmesh:cpu] [--port 18000]
  Starts the image's demo cluster (`up --host 0.0.0.0` with an API key) with the API published on
  127.0.0.1:PORT, waits until it is ready, sends a chat completion (printed) and one with a prompt over 2 KiB
  (tokenized in the router's worker thread), checks the key is required, the user is not root and every process
  runs the compiled build without tsx (the router's /metrics build_info, the processes' command lines), stops the
  container (it must exit 0) and removes it.
  Environment: CONTAINER_RUNTIME (an OCI runtime for podman, e.g. runc).
EOF
}

IMAGE=expertmesh:cpu
PORT=18000
while [ $# -gt 0 ]; do
  case "$1" in
    --image) IMAGE=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "smoke.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

podman_args=()
[ -n "${CONTAINER_RUNTIME:-}" ] && podman_args+=(--runtime "$CONTAINER_RUNTIME")
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ] && nofile=1048576
[ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
key="sk-smoke-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
name="expertmesh-smoke-$$"
start=$(date +%s)
podman "${podman_args[@]}" run -d --name "$name" --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" \
  -p "127.0.0.1:$PORT:8000" -e "EXPERTMESH_API_KEY=$key" "$IMAGE" up --host 0.0.0.0 >/dev/null
trap 'podman "${podman_args[@]}" stop -t 30 "$name" >/dev/null 2>&1 || true; podman "${podman_args[@]}" rm -f "$name" >/dev/null 2>&1 || true' EXIT

# `up` prints {"event":"ready",…} once every expert has a live holder.
for _ in $(seq 1 600); do
  if podman logs "$name" 2>/dev/null | grep -q '"event":"ready"'; then break; fi
  if [ "$(podman inspect -f '{{.State.Running}}' "$name")" != true ]; then podman logs "$name" >&2; exit 1; fi
  sleep 1
done
podman logs "$name" 2>/dev/null | grep -q '"event":"ready"' || { podman logs "$name" >&2; echo "smoke.sh: not ready after 600 s" >&2; exit 1; }
ready=$(( $(date +%s) - start ))

unauthorized=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v1/models")
answer=$(curl -sf "http://127.0.0.1:$PORT/v1/chat/completions" -H "Authorization: Bearer $key" -H 'content-type: application/json' \
  -d '{"model": "demo", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}')
echo "$answer"
# A prompt over 2 KiB is tokenized in the router's worker thread, which must start from the image's working directory.
long=$(printf 'The router tokenizes long prompts off its event loop. %.0s' $(seq 1 60))
long_answer=$(curl -sf "http://127.0.0.1:$PORT/v1/chat/completions" -H "Authorization: Bearer $key" -H 'content-type: application/json' \
  -d "{\"model\": \"demo\", \"messages\": [{\"role\": \"user\", \"content\": \"$long\"}], \"max_tokens\": 4}")
long_prompt_tokens=$(echo "$long_answer" | grep -o '"prompt_tokens":[0-9]*' | cut -d: -f2)
user=$(podman exec "$name" id -u)
# Production runs the compiled build: the router says so on /metrics, every process of the cluster runs the build's
# launcher with plain node (none loads tsx, which is not even in the image).
build_info=$(curl -sf "http://127.0.0.1:$PORT/metrics" -H "Authorization: Bearer $key" | grep '^expertmesh_router_build_info{' || true)
commands=$(podman exec "$name" sh -c 'for p in /proc/[0-9]*; do tr "\0" " " < "$p/cmdline" 2>/dev/null; echo; done')
compiled_processes=$(echo "$commands" | grep -c '^\S*node /opt/expertmesh/dist/expertmesh\.mjs ' || true)
tsx_processes=$(echo "$commands" | grep -c -e 'tsx' -e '\.ts ' || true)
tsx_installed=$(podman exec "$name" sh -c 'test -e /opt/expertmesh/node_modules/tsx && echo 1 || echo 0')
podman "${podman_args[@]}" stop -t 30 "$name" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
echo "{\"event\":\"smoke\",\"image\":\"$IMAGE\",\"ready_seconds\":$ready,\"unauthorized_status\":$unauthorized,\"uid\":$user,\"long_prompt_tokens\":${long_prompt_tokens:-0},\"exit_code_after_stop\":$code,\"compiled_processes\":$compiled_processes,\"tsx_processes\":$tsx_processes,\"tsx_installed\":$tsx_installed,\"router_build_info\":\"${build_info//\"/\\\"}\"}"
[ "$unauthorized" = 401 ] && echo "$answer" | grep -q '"role":"assistant"' && [ "${long_prompt_tokens:-0}" -gt 500 ] && [ "$user" != 0 ] && [ "$code" = 0 ] \
  && echo "$build_info" | grep -q 'runtime="compiled",loader="none"' && [ "$compiled_processes" -ge 2 ] && [ "$tsx_processes" = 0 ] && [ "$tsx_installed" = 0 ]
