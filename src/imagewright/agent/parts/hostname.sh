# ---------------------------------------------------------------------------------------------
# Hostname
# ---------------------------------------------------------------------------------------------

live_hostname() {
    if [ -r "$R/proc/sys/kernel/hostname" ]; then
        cat "$R/proc/sys/kernel/hostname"
    elif [ "$DRYRUN" != 1 ] && have hostname; then
        hostname 2>/dev/null
    fi
}

set_live_hostname() {
    if have hostname; then
        live hostname "$1"
    else
        if [ "$DRYRUN" = 1 ]; then
            log "dry-run: echo $1 > /proc/sys/kernel/hostname"
        else
            printf '%s\n' "$1" >"$R/proc/sys/kernel/hostname"
        fi
    fi
}

# The 127.0.1.1 line of /etc/hosts names this machine (Debian's convention, and cloud-init's
# manage_etc_hosts: localhost): replaced when present, added when not, other lines kept.
update_etc_hosts() {
    _uh_entry=$(printf '127.0.1.1\t%s%s' "${2:+$2 }" "$1")
    if [ -f "$R/etc/hosts" ]; then
        awk -v e="$_uh_entry" '$1 == "127.0.1.1" { if (!done) print e; done = 1; next }
            { print } END { if (!done) print e }' "$R/etc/hosts" >"$WORK/hosts.new"
    else
        printf '127.0.0.1\tlocalhost\n%s\n' "$_uh_entry" >"$WORK/hosts.new"
    fi
    replace_file "$R/etc/hosts" "$WORK/hosts.new" 644
    case $? in
        0) log "hostname: updated /etc/hosts" ;;
        2) return 1 ;;
    esac
    return 0
}

# WHEN of the hostname step: the source gave a usable name (a later boot's data may give one)
has_hostname() {
    [ -n "$HOST_APPLIED" ]
}

# once per instance: /etc/hostname and /etc/hosts (the running name follows in sync_hostname)
apply_hostname() {
    _ah_fqdn=
    _ah_short=${HOST_APPLIED%%.*}
    case $HOST_APPLIED in *.*) _ah_fqdn=$HOST_APPLIED ;; esac
    printf '%s\n' "$_ah_short" >"$WORK/hostname.new"
    replace_file "$R/etc/hostname" "$WORK/hostname.new" 644
    case $? in
        0) log "hostname: /etc/hostname set to $_ah_short" ;;
        2) return 1 ;;
    esac
    update_etc_hosts "$_ah_short" "$_ah_fqdn"
}

# every boot: the running host name follows /etc/hostname (busybox init does not do it)
sync_hostname() {
    _sh_want=$(first_line "$R/etc/hostname")
    [ -n "$_sh_want" ] || return 0
    if [ "$(live_hostname)" != "$_sh_want" ]; then
        set_live_hostname "$_sh_want"
    fi
}

# Wakame extra-hosts: a block of /etc/hosts the agent owns, rewritten when it changes.
apply_extra_hosts() {
    [ -s "$WORK/ctx/hosts" ] || return 0
    _eh_begin='# BEGIN imagewright-agent extra-hosts'
    _eh_end='# END imagewright-agent extra-hosts'
    {
        if [ -f "$R/etc/hosts" ]; then
            awk -v b="$_eh_begin" -v e="$_eh_end" '$0 == b { skip = 1; next } $0 == e { skip = 0; next } !skip' "$R/etc/hosts"
        fi
        echo "$_eh_begin"
        sort -u "$WORK/ctx/hosts" | awk '{ print $1 "\t" $2 }'
        echo "$_eh_end"
    } >"$WORK/hosts.extra"
    replace_file "$R/etc/hosts" "$WORK/hosts.extra" 644 && log "hosts: wrote $(wc -l <"$WORK/ctx/hosts" | tr -d ' ') extra host(s)"
    return 0
}

