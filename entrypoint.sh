#!/usr/bin/env bash
# Container entry: start ComfyUI on loopback, wait for it (bounded; abort if it dies), run the
# start-up checks, optionally warm the models, then replace this shell with the RunPod handler,
# handing it every argument (e.g. --rp_serve_api --rp_api_host 0.0.0.0).
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
export COMFYUI_DIR COMFYUI_PORT COMFYUI_LOG_FILE WORKFLOW_DIR COMFYUI_URL

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

comfyui_answers() {
    # Any HTTP answer below 500 means the server is up: ComfyUI listens only after loading its nodes.
    "$COMFYUI_PYTHON" - "$COMFYUI_URL/system_stats" <<'PY' >/dev/null 2>&1
import sys
import urllib.error
import urllib.request

opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    opener.open(sys.argv[1], timeout=2)
except urllib.error.HTTPError as exc:
    sys.exit(0 if exc.code < 500 else 1)
except Exception:
    sys.exit(1)
PY
}

wait_for_comfyui() {
    local deadline=$((SECONDS + COMFYUI_START_TIMEOUT_S)) status
    until comfyui_answers; do
        if ! kill -0 "$comfyui_pid" 2>/dev/null; then
            status=0
            wait "$comfyui_pid" || status=$?
            comfyui_pid=""
            fail "ComfyUI exited with status $status before answering on $COMFYUI_URL;" \
                "its log is above and in $COMFYUI_LOG_FILE"
        fi
        if [ "$SECONDS" -gt "$deadline" ]; then  # strictly after: SECONDS counts whole seconds
            fail "ComfyUI did not answer on $COMFYUI_URL within" \
                "COMFYUI_START_TIMEOUT_S=${COMFYUI_START_TIMEOUT_S} s; its log is above and in $COMFYUI_LOG_FILE"
        fi
        sleep 1
    done
    say "ComfyUI answers on $COMFYUI_URL after ${SECONDS} s"
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

run_startup_checks() {
    if ! enabled RUN_STARTUP_CHECKS "$RUN_STARTUP_CHECKS"; then
        say "start-up checks skipped (RUN_STARTUP_CHECKS=$RUN_STARTUP_CHECKS)"
        return
    fi
    local status=0
    (cd "$APP_DIR" && "$WORKER_PYTHON" -m infinitetalk_worker check) || status=$?
    case "$status" in
        # They just passed against this very ComfyUI: the handler need not repeat them.
        0) export RUN_STARTUP_CHECKS=false ;;
        # Only model files are missing: exiting would make RunPod restart the worker forever. The
        # handler runs the checks again, answers {"test": true} with ready: false and the missing
        # files, and fails each job with a sentence saying what to mount or download.
        3) say "WARNING: model files are missing (listed above); the worker starts but is not ready" ;;
        *) fail "the start-up checks failed (python -m infinitetalk_worker check); see the message above" ;;
    esac
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
    wait_for_comfyui
    settle_attention_mode
    run_startup_checks
    warm_models
    trap - EXIT
    say "starting the handler (WAN_ATTENTION_MODE=$WAN_ATTENTION_MODE)"
    cd "$APP_DIR"
    exec "$WORKER_PYTHON" -u "$APP_DIR/handler.py" "$@"
}

main "$@"
