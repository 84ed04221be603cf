#!/usr/bin/env bash
# Container entry: start ComfyUI on loopback, decide the attention mode, optionally warm the models,
# then replace this shell with the RunPod handler, handing it every argument (e.g. --rp_serve_api
# --rp_api_host 0.0.0.0). The handler loads while ComfyUI still loads its nodes; it then waits for
# ComfyUI (COMFYUI_START_TIMEOUT_S; ComfyUI stays its child, so a crash is seen at once), runs the
# start-up checks and takes jobs; on any failure it stops ComfyUI and exits
# (infinitetalk_worker/comfyui_process.py).
#
# Every path and command below has an image default and an environment override, so the same
# script runs outside the image: COMFYUI_DIR, COMFYUI_PYTHON, WORKER_PYTHON, COMFYUI_PORT,
# COMFYUI_ARGS, WORKFLOW_DIR, COMFYUI_START_TIMEOUT_S, COMFYUI_LOG_FILE, RUN_STARTUP_CHECKS, WARM_MODELS,
# WAN_ATTENTION_MODE.
set -euo pipefail

APP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

COMFYUI_DIR=${COMFYUI_DIR:-/comfyui}
COMFYUI_PYTHON=${COMFYUI_PYTHON:-/opt/venv/bin/python}
WORKER_PYTHON=${WORKER_PYTHON:-$COMFYUI_PYTHON}
COMFYUI_PORT=${COMFYUI_PORT:-8188}
COMFYUI_ARGS=${COMFYUI_ARGS:-}
COMFYUI_START_TIMEOUT_S=${COMFYUI_START_TIMEOUT_S:-600}
COMFYUI_LOG_FILE=${COMFYUI_LOG_FILE:-/tmp/comfyui.log}
RUN_STARTUP_CHECKS=${RUN_STARTUP_CHECKS:-true}
WARM_MODELS=${WARM_MODELS:-false}
WORKFLOW_DIR=${WORKFLOW_DIR:-$APP_DIR/workflows}
COMFYUI_URL="http://127.0.0.1:${COMFYUI_PORT}"
export COMFYUI_DIR COMFYUI_PORT COMFYUI_LOG_FILE COMFYUI_START_TIMEOUT_S WORKFLOW_DIR COMFYUI_URL

say() { echo "entrypoint: $*" >&2; }

fail() {
    say "ERROR: $*"
    exit 1
}

# true/false the way the worker's settings read them: 1/true/yes/on and 0/false/no/off.
enabled() {
    case "${2,,}" in
        1 | true | yes | on) return 0 ;;
        0 | false | no | off) return 1 ;;
        *) fail "$1='$2' must be true or false" ;;
    esac
}

check_settings() {
    [[ "$COMFYUI_PORT" =~ ^[0-9]+$ ]] || fail "COMFYUI_PORT='$COMFYUI_PORT' must be a port number"
    [[ "$COMFYUI_START_TIMEOUT_S" =~ ^[1-9][0-9]*$ ]] ||
        fail "COMFYUI_START_TIMEOUT_S='$COMFYUI_START_TIMEOUT_S' must be a whole number of seconds above 0"
    [ -f "$COMFYUI_DIR/main.py" ] || fail "COMFYUI_DIR='$COMFYUI_DIR' does not contain ComfyUI's main.py"
    command -v "$COMFYUI_PYTHON" >/dev/null || fail "COMFYUI_PYTHON='$COMFYUI_PYTHON' is not an executable"
    command -v "$WORKER_PYTHON" >/dev/null || fail "WORKER_PYTHON='$WORKER_PYTHON' is not an executable"
    [ -d "$WORKFLOW_DIR" ] || fail "WORKFLOW_DIR='$WORKFLOW_DIR' is not a directory"
    enabled RUN_STARTUP_CHECKS "$RUN_STARTUP_CHECKS" || true
    enabled WARM_MODELS "$WARM_MODELS" || true
}

comfyui_pid=""
attention_pid=""
attention_file=""

stop_children() {
    set +e # every step runs, even when a child is already gone
    if [ -n "$attention_pid" ]; then kill "$attention_pid" 2>/dev/null; fi
    if [ -n "$attention_file" ]; then rm -f "$attention_file"; fi
    if [ -n "$comfyui_pid" ]; then kill "$comfyui_pid" 2>/dev/null; fi
}

start_comfyui() {
    local extra_args=()
    read -r -a extra_args <<<"$COMFYUI_ARGS"
    : >"$COMFYUI_LOG_FILE"
    say "starting ComfyUI in $COMFYUI_DIR on 127.0.0.1:$COMFYUI_PORT ${COMFYUI_ARGS:+with $COMFYUI_ARGS}"
    # Output goes to the container log and to $COMFYUI_LOG_FILE, whose tail the worker reports if ComfyUI dies.
    (cd "$COMFYUI_DIR" && exec "$COMFYUI_PYTHON" -u main.py --listen 127.0.0.1 --port "$COMFYUI_PORT" \
        "${extra_args[@]}") > >(tee -a "$COMFYUI_LOG_FILE") 2>&1 &
    comfyui_pid=$!
    export COMFYUI_PID=$comfyui_pid
}

# Runs while ComfyUI loads: deciding auto/sageattn may take a GPU test of its own.
start_attention_probe() {
    attention_file=$(mktemp)
    WAN_ATTENTION_MODE=${WAN_ATTENTION_MODE:-auto} \
        "$COMFYUI_PYTHON" "$APP_DIR/scripts/attention_mode.py" >"$attention_file" &
    attention_pid=$!
}

# A ComfyUI that already died is this shell's to report: its exit status does not survive the exec.
comfyui_still_running() {
    local status=0
    kill -0 "$comfyui_pid" 2>/dev/null && return 0
    wait "$comfyui_pid" || status=$?
    comfyui_pid=""
    fail "ComfyUI exited with status $status before answering on $COMFYUI_URL;" \
        "its log is above and in $COMFYUI_LOG_FILE"
}

settle_attention_mode() {
    local status=0
    wait "$attention_pid" || status=$?
    attention_pid=""
    case "$status" in
        0) WAN_ATTENTION_MODE=$(<"$attention_file") ;;
        2) fail "WAN_ATTENTION_MODE is not valid (see the message above)" ;;
        *)
            say "WARNING: the attention mode check failed with status $status; using sdpa"
            WAN_ATTENTION_MODE=sdpa
            ;;
    esac
    rm -f "$attention_file"
    attention_file=""
    export WAN_ATTENTION_MODE
}

warm_models() {
    enabled WARM_MODELS "$WARM_MODELS" || return 0
    (cd "$APP_DIR" && "$WORKER_PYTHON" -m infinitetalk_worker warm-models --only-used-by "$WORKFLOW_DIR") ||
        say "WARNING: warming the model files failed; the first job will read them instead"
}

main() {
    check_settings
    trap stop_children EXIT
    start_comfyui
    start_attention_probe
    # Both run while ComfyUI loads its nodes; so does the handler's own start (imports, settings).
    settle_attention_mode
    warm_models
    comfyui_still_running
    trap - EXIT
    say "starting the handler (WAN_ATTENTION_MODE=$WAN_ATTENTION_MODE)"
    cd "$APP_DIR"
    exec "$WORKER_PYTHON" -u "$APP_DIR/handler.py" "$@"
}

main "$@"
