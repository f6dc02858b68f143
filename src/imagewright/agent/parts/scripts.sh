# ---------------------------------------------------------------------------------------------
# Per-instance scripts: user-data and OpenNebula's init.sh
# ---------------------------------------------------------------------------------------------

# run_script FILE LOG STATUS DIR LABEL: run an executable in DIR, its output into LOG, then onto
# the console as "LABEL| line".
# The output goes to a file rather than through a pipe so that a daemon started by the script
# and holding its stdout cannot keep the agent (and the boot) waiting.
run_script() {
    _rs_file=$1
    _rs_log=$2
    _rs_status=$3
    _rs_dir=${4:-/}
    _rs_label=${5:-${1##*/}}
    (
        cd "$_rs_dir" 2>/dev/null || cd /
        HOME=${HOME:-/root}
        export HOME
        exec "$_rs_file"
    ) </dev/null >"$_rs_log" 2>&1 3>&-
    _rs_rc=$?
    echo "$_rs_rc" >"$_rs_status"
    if [ -s "$_rs_log" ]; then
        _rs_n=0
        while IFS= read -r _rs_line && [ "$_rs_n" -lt 1000 ]; do
            log "$_rs_label| $_rs_line"
            _rs_n=$((_rs_n + 1))
        done <"$_rs_log"
    fi
    return "$_rs_rc"
}

# WHEN of the user-data step: there is user-data and it is a script (#cloud-config user-data
# lent its keys and hostname to the context already; anything else is not run at all).
user_data_is_script() {
    [ -s "$WORK/ctx/user-data" ] || return 1
    [ "$(head -c 2 "$WORK/ctx/user-data")" = '#!' ] && return 0
    if [ "$(head -c 13 "$WORK/ctx/user-data")" != "#cloud-config" ]; then
        log "user-data is not a script (no #! line); not run"
    fi
    return 1
}

# The user-data script runs once per instance; its own exit status is recorded, not a failure of
# the step (as with cloud-init's scripts-user): a failed script is not run again at every boot.
run_user_data() {
    _ud_script=$INSTANCE_STATE/user-data
    if ! { cp "$WORK/ctx/user-data" "$_ud_script" && chmod 700 "$_ud_script"; }; then
        log "user-data: could not be copied to ${_ud_script#"$R"}"
        return 1
    fi
    log "user-data: running ($(file_size "$_ud_script") bytes)"
    run_script "$_ud_script" "$INSTANCE_STATE/user-data.log" "$INSTANCE_STATE/user-data.status" / user-data
    log "user-data: exit status $(cat "$INSTANCE_STATE/user-data.status")"
}

has_init_scripts() {
    [ -n "$CTX_INIT" ]
}

# OpenNebula's init scripts (init.sh, StratusLab's before it) expect the context variables in
# their environment and the medium as their working directory; they run in INIT_SCRIPTS order.
# Their exit statuses are recorded like user-data's.
run_init_scripts() {
    for _ri_s in $CTX_INIT; do
        if ! {
            printf '#!/bin/sh\nset -a\n. ./context.sh\nset +a\nexec sh ./%s\n' "$_ri_s" >"$INSTANCE_STATE/$_ri_s.run" &&
                chmod 700 "$INSTANCE_STATE/$_ri_s.run"
        }; then
            log "$_ri_s: could not write ${INSTANCE_STATE#"$R"}/$_ri_s.run"
            return 1
        fi
        log "$_ri_s: running the medium's $_ri_s"
        run_script "$INSTANCE_STATE/$_ri_s.run" "$INSTANCE_STATE/$_ri_s.log" \
            "$INSTANCE_STATE/$_ri_s.status" "$MEDIUM_DIR" "$_ri_s"
        log "$_ri_s: exit status $(cat "$INSTANCE_STATE/$_ri_s.status")"
    done
}

