# ---------------------------------------------------------------------------------------------
# Instances and steps: all of the agent's bookkeeping (the step table is in the main file)
#
# A step is one line of the table:   NAME  FREQUENCY  WHEN  FUNCTION
#   per-instance  runs once for each instance-id; marker $STATE/<instance-id>/sem/NAME.
#                 Needs an instance: when no source answered, per-instance steps do not run.
#   per-boot      runs at every boot; no marker.
#   once          runs once in the machine's life, whatever the instance; marker $STATE/.sem/NAME
#                 (a dot name: instance-ids never start with a dot, so no instance shares it).
#   WHEN          a function that says whether the step applies at this boot, or "-" (always).
#                 A step that does not apply is neither run nor marked: a later boot may apply it.
#
# run_step is the only code that reads or writes step markers (open_instance takes over those
# of older agents; close_instance keeps the instance's own records). As cloud-init's
# Runners/Semaphores do (cloudinit/helpers.py), it writes a step's marker before running it, so
# a step that reboots the machine (user-data may) is not run again; and as cloud-init does with
# clear_on_fail — which its config modules do not ask for — a step that fails (returns non-zero)
# has its marker removed, so it runs again at the next boot. A failing step never stops the
# steps after it. A marker that cannot be written means the step does not run (cloud-init's
# "Failed to acquire lock"): a per-instance step that ran at every boot because /var is
# read-only could be a user-data script that reboots the machine, forever.
# Markers are written while the steps run, before main's sync and ready line.
# ---------------------------------------------------------------------------------------------

STEPS_RUN= # the steps run at this boot (whatever their outcome), as " NAME NAME"

# step_ran NAME: did NAME run at this boot? (for a WHEN function: "unless that one ran")
step_ran() {
    case "$STEPS_RUN " in *" $1 "*) return 0 ;; esac
    return 1
}

# run_step NAME FREQUENCY WHEN FUNCTION
run_step() {
    case $2 in
        per-boot) _st_marker= ;;
        per-instance)
            [ -n "$INSTANCE_STATE" ] || return 0
            _st_marker=$INSTANCE_STATE/sem/$1
            ;;
        once) _st_marker=$STATE/.sem/$1 ;;
        *)
            log "step $1: unknown frequency '$2'; not run"
            return 0
            ;;
    esac
    if [ -n "$_st_marker" ] && [ -e "$_st_marker" ]; then
        return 0
    fi
    if [ "$3" != - ] && ! "$3"; then
        return 0
    fi
    if [ -n "$_st_marker" ] && ! { (umask 077 && mkdir -p "${_st_marker%/*}") && : >"$_st_marker"; } 2>/dev/null; then
        log "step $1: cannot write its marker ${_st_marker#"$R"}; not run"
        return 0
    fi
    STEPS_RUN="$STEPS_RUN $1"
    "$4"
    _st_rc=$?
    [ "$_st_rc" = 0 ] && return 0
    if [ -n "$_st_marker" ]; then
        rm -f "$_st_marker"
        log "step $1 failed (status $_st_rc); it runs again at the next boot"
    else
        log "step $1 failed (status $_st_rc)"
    fi
    return 0
}

# run_steps: every step of AGENT_STEPS, in order. The table is read on fd 4, which the steps do
# not inherit (a step's commands and user scripts see only the agent's own descriptors).
run_steps() {
    STEPS_RUN=
    while read -r _ss_name _ss_freq _ss_when _ss_run <&4; do
        [ -n "$_ss_name" ] || continue
        run_step "$_ss_name" "$_ss_freq" "$_ss_when" "$_ss_run" 4<&-
    done 4<<EOF
$AGENT_STEPS
EOF
}

# open_instance: INSTANCE_ID, INSTANCE_STATE and HOST_APPLIED from the source's context (all
# empty when no source answered). Markers of agents older than the step table
# (<id>/done.<step>) move to sem/ first, so that an upgraded agent does not run them again.
open_instance() {
    INSTANCE_ID=
    INSTANCE_STATE=
    HOST_APPLIED=
    LAST_INSTANCE_ID=
    [ "$SOURCE" != none ] || return 0
    INSTANCE_ID=$(clean_instance_id "$CTX_ID")
    if [ -z "$INSTANCE_ID" ]; then
        INSTANCE_ID=$SOURCE-$(cat "$WORK/ctx/keys" "$WORK/ctx/net" | digest_of /dev/stdin 2>/dev/null)
        INSTANCE_ID=$(clean_instance_id "$INSTANCE_ID")
        log "the source names no instance-id; using $INSTANCE_ID"
    fi
    [ "$INSTANCE_ID" = "$(clean_instance_id "$CTX_ID")" ] || [ -z "$CTX_ID" ] ||
        log "instance-id '$CTX_ID' written as $INSTANCE_ID"
    INSTANCE_STATE=$STATE/$INSTANCE_ID
    mkdir -p "$INSTANCE_STATE" && chmod 700 "$STATE" "$INSTANCE_STATE"
    for _oi_old in "$INSTANCE_STATE"/done.*; do
        [ -e "$_oi_old" ] || continue
        _oi_step=${_oi_old##*/done.}
        [ "$_oi_step" = init-script ] && _oi_step=init-scripts
        mkdir -p "$INSTANCE_STATE/sem" && mv -f "$_oi_old" "$INSTANCE_STATE/sem/$_oi_step"
    done
    LAST_INSTANCE_ID=$(first_line "$STATE/.last-instance-id")
    if [ -e "$INSTANCE_STATE/sem/instance" ]; then
        log "instance $INSTANCE_ID: known; per-instance steps were done before"
    elif [ -n "$LAST_INSTANCE_ID" ]; then
        log "instance $INSTANCE_ID: new (previous instance: $LAST_INSTANCE_ID)"
    else
        log "instance $INSTANCE_ID: first boot"
    fi
    if [ -n "$CTX_HOST" ]; then
        HOST_APPLIED=$(clean_hostname "$CTX_HOST")
        [ -n "$HOST_APPLIED" ] || log "hostname '$CTX_HOST' is not usable; ignored"
    fi
}

# close_instance: after the steps, the instance's records: its source, sem/instance (a whole
# boot of this instance went through the steps), and .last-instance-id. Each is written only
# when it changes: a second boot of the same instance changes no file.
close_instance() {
    [ -n "$INSTANCE_STATE" ] || return 0
    [ "$(first_line "$INSTANCE_STATE/source")" = "$SOURCE" ] || echo "$SOURCE" >"$INSTANCE_STATE/source"
    [ -e "$INSTANCE_STATE/sem/instance" ] || { mkdir -p "$INSTANCE_STATE/sem" && : >"$INSTANCE_STATE/sem/instance"; } 2>/dev/null
    [ "$LAST_INSTANCE_ID" = "$INSTANCE_ID" ] || printf '%s\n' "$INSTANCE_ID" >"$STATE/.last-instance-id"
}

