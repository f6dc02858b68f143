# ---------------------------------------------------------------------------------------------
# Logging and running commands
# ---------------------------------------------------------------------------------------------

# fd 3 is the agent's console; command substitutions capture fd 1 only, so functions that
# return a value on stdout can still log.
exec 3>&1

log() {
    printf '%s %s\n' "$AGENT_PREFIX" "$*" >&3
    if [ -n "$LOG_FILE" ]; then
        printf '%s %s\n' "$AGENT_PREFIX" "$*" >>"$LOG_FILE" 2>/dev/null || LOG_FILE=
    fi
}

have() {
    command -v "$1" >/dev/null 2>&1
}

# log_output TEXT: a command's output into the log, each line indented.
log_output() {
    [ -n "$1" ] || return 0
    printf '%s\n' "$1" >"$WORK/run.out" 2>/dev/null
    while IFS= read -r _lo_line; do
        log "  $_lo_line"
    done <"$WORK/run.out"
}

# Run a command, copy its output into the log (indented), return its status.
run_logged() {
    _rl_out=$("$@" </dev/null 2>&1 3>&-)
    _rl_rc=$?
    log_output "$_rl_out"
    return $_rl_rc
}

# A command that changes (or probes) the running system: logged instead of run in dry-run.
live() {
    if [ "$DRYRUN" = 1 ]; then
        log "dry-run: $*"
        return 0
    fi
    run_logged "$@"
}

# Same, stopped after SECONDS (for DHCP clients, which may wait a long time for a lease).
live_timeout() {
    _lt_secs=$1
    shift
    if [ "$DRYRUN" = 1 ]; then
        log "dry-run: $*"
        return 0
    fi
    run_logged with_timeout "$_lt_secs" "$@"
}

# Same, with INPUT on the command's standard input.
live_input() {
    _li_input=$1
    shift
    if [ "$DRYRUN" = 1 ]; then
        log "dry-run: printf '$_li_input' | $*"
        return 0
    fi
    _li_out=$(printf '%s\n' "$_li_input" | "$@" 2>&1 3>&-)
    _li_rc=$?
    log_output "$_li_out"
    return $_li_rc
}

# timeout(1) exists as coreutils and as a busybox applet; busybox before 1.30 wanted "-t SECS".
TIMEOUT_STYLE=
with_timeout() {
    _wt_secs=$1
    shift
    if [ -z "$TIMEOUT_STYLE" ]; then
        if have timeout && timeout 5 true >/dev/null 2>&1; then
            TIMEOUT_STYLE=plain
        elif have timeout && timeout -t 5 true >/dev/null 2>&1; then
            TIMEOUT_STYLE=dash-t
        else
            TIMEOUT_STYLE=none
        fi
    fi
    case $TIMEOUT_STYLE in
        plain) timeout "$_wt_secs" "$@" ;;
        dash-t) timeout -t "$_wt_secs" "$@" ;;
        *) "$@" ;;
    esac
}

