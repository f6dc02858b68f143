# ---------------------------------------------------------------------------------------------
# SSH: authorized_keys and host keys
# ---------------------------------------------------------------------------------------------

apply_ssh_keys() {
    if [ ! -s "$WORK/ctx/keys" ]; then
        log "ssh: the source gave no public keys"
        return 0
    fi
    _ak_user=$CONF_DEFAULT_USER
    _ak_pw=$(awk -F: -v u="$_ak_user" '$1 == u { print $3 ":" $4 ":" $6; exit }' "$R/etc/passwd" 2>/dev/null)
    if [ -z "$_ak_pw" ] && [ "$_ak_user" != root ]; then
        log "ssh: user $_ak_user does not exist; the keys go to root"
        _ak_user=root
        _ak_pw=$(awk -F: '$1 == "root" { print $3 ":" $4 ":" $6; exit }' "$R/etc/passwd" 2>/dev/null)
    fi
    [ -n "$_ak_pw" ] || _ak_pw=0:0:/root
    _ak_uid=${_ak_pw%%:*}
    _ak_rest=${_ak_pw#*:}
    _ak_gid=${_ak_rest%%:*}
    _ak_home=${_ak_rest#*:}
    case $_ak_home in /*) ;; *) _ak_home=/root ;; esac
    _ak_dir=$R$_ak_home/.ssh
    _ak_file=$_ak_dir/authorized_keys
    if ! { mkdir -p "$_ak_dir" && chmod 700 "$_ak_dir" && { [ -f "$_ak_file" ] || : >"$_ak_file"; }; }; then
        log "ssh: could not create $_ak_home/.ssh/authorized_keys"
        return 1
    fi
    # a file without a final newline would glue our first key to its last line
    if [ -s "$_ak_file" ] && [ -n "$(tail -c 1 "$_ak_file")" ]; then
        echo >>"$_ak_file"
    fi
    _ak_added=0
    while IFS= read -r _ak_key; do
        [ -n "$_ak_key" ] || continue
        grep -qxF -- "$_ak_key" "$_ak_file" && continue
        if ! printf '%s\n' "$_ak_key" >>"$_ak_file"; then
            log "ssh: could not add keys to $_ak_home/.ssh/authorized_keys"
            return 1
        fi
        _ak_added=$((_ak_added + 1))
    done <"$WORK/ctx/keys"
    chmod 600 "$_ak_file"
    chown "$_ak_uid:$_ak_gid" "$_ak_dir" "$_ak_file" 2>/dev/null || log "ssh: could not chown $_ak_home/.ssh to $_ak_uid:$_ak_gid"
    if [ -z "$R" ] && have restorecon; then
        restorecon -R "$_ak_dir" >/dev/null 2>&1
    fi
    log "ssh: $_ak_added key(s) added to $_ak_home/.ssh/authorized_keys of $_ak_user"
}

# WHEN of the host-keys step: HOST_KEYS=per-instance (the default) gives each instance new keys
host_keys_per_instance() {
    [ "$CONF_HOST_KEYS" = per-instance ]
}

# WHEN of the missing-host-keys step: not at the boot that has just replaced them all
host_keys_not_replaced() {
    ! step_ran host-keys
}

replace_host_keys() {
    apply_host_keys 1
}

add_missing_host_keys() {
    apply_host_keys 0
}

# apply_host_keys 1: set the old keys aside, generate, and put them back if nothing could be
# generated. apply_host_keys 0: generate missing keys only. Non-zero when keys were wanted and a
# generator failed; 0 when there is nothing to generate them with (or nothing to use them).
apply_host_keys() {
    _hk_regen=$1
    if have ssh-keygen; then
        # like cloud-init: keys wherever ssh-keygen and /etc/ssh are (an image may get its
        # server later, or run one from elsewhere, e.g. the test guest has ssh-keygen only)
        if [ ! -d "$R/etc/ssh" ] && [ ! -x "$R/usr/sbin/sshd" ]; then
            log "ssh: no /etc/ssh and no sshd here; host keys not generated"
            return 0
        fi
        mkdir -p "$R/etc/ssh"
        if [ "$_hk_regen" = 1 ] && ls "$R"/etc/ssh/ssh_host_*_key >/dev/null 2>&1; then
            mkdir -p "$WORK/old-host-keys"
            mv "$R"/etc/ssh/ssh_host_*_key* "$WORK/old-host-keys/" 2>/dev/null
            log "ssh: new instance: replacing the SSH host keys"
        fi
        if [ -n "$R" ]; then
            run_logged ssh-keygen -A -f "$R"
        else
            run_logged ssh-keygen -A
        fi
        _hk_rc=$?
        if [ -d "$WORK/old-host-keys" ] && ! ls "$R"/etc/ssh/ssh_host_*_key >/dev/null 2>&1; then
            log "ssh: no host key could be generated; the previous keys are kept"
            mv "$WORK/old-host-keys"/* "$R/etc/ssh/" 2>/dev/null
            _hk_rc=1
        fi
        rm -rf "$WORK/old-host-keys"
        return "$_hk_rc"
    elif have dropbearkey; then
        mkdir -p "$R/etc/dropbear"
        _hk_rc=0
        for _hk_t in rsa ecdsa ed25519; do
            _hk_f=$R/etc/dropbear/dropbear_${_hk_t}_host_key
            [ "$_hk_regen" = 1 ] && rm -f "$_hk_f"
            if [ ! -s "$_hk_f" ] && ! run_logged dropbearkey -t "$_hk_t" -f "$_hk_f"; then
                log "ssh: dropbearkey could not make a $_hk_t key"
                _hk_rc=1
            fi
        done
        return "$_hk_rc"
    fi
    log "ssh: neither ssh-keygen nor dropbearkey is installed; host keys not generated"
}

