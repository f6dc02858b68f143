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

run_user_data() {
    _ud=$WORK/ctx/user-data
    [ -s "$_ud" ] || return 0
    if [ "$(head -c 2 "$_ud")" != '#!' ]; then
        if [ "$(head -c 13 "$_ud")" != "#cloud-config" ]; then
            log "user-data is not a script (no #! line); not run"
        fi
        return 0
    fi
    _ud_script=$INSTANCE_STATE/user-data
    cp "$_ud" "$_ud_script" && chmod 700 "$_ud_script"
    # the marker comes first: a script that reboots the machine is not run a second time
    : >"$INSTANCE_STATE/done.user-data"
    log "user-data: running ($(file_size "$_ud") bytes)"
    run_script "$_ud_script" "$INSTANCE_STATE/user-data.log" "$INSTANCE_STATE/user-data.status" / user-data
    log "user-data: exit status $(cat "$INSTANCE_STATE/user-data.status")"
}

# OpenNebula's init scripts (init.sh, StratusLab's before it) expect the context variables in
# their environment and the medium as their working directory; they run in INIT_SCRIPTS order.
run_init_scripts() {
    [ -n "$CTX_INIT" ] || return 0
    : >"$INSTANCE_STATE/done.init-script"
    for _ri_s in $CTX_INIT; do
        {
            echo '#!/bin/sh'
            echo 'set -a'
            echo '. ./context.sh'
            echo 'set +a'
            echo "exec sh ./$_ri_s"
        } >"$INSTANCE_STATE/$_ri_s.run"
        chmod 700 "$INSTANCE_STATE/$_ri_s.run"
        log "$_ri_s: running the medium's $_ri_s"
        run_script "$INSTANCE_STATE/$_ri_s.run" "$INSTANCE_STATE/$_ri_s.log" \
            "$INSTANCE_STATE/$_ri_s.status" "$MEDIUM_DIR" "$_ri_s"
        log "$_ri_s: exit status $(cat "$INSTANCE_STATE/$_ri_s.status")"
    done
}

