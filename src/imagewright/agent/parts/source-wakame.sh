# ---------------------------------------------------------------------------------------------
# Source: Wakame-vdc metadata drive (meta-data/ mirrors the EC2 paths, one file per value)
# ---------------------------------------------------------------------------------------------

source_wakame() {
    media wakame METADATA metadata || return 1
    _wk=$MEDIUM_DIR/meta-data
    if [ ! -d "$_wk" ]; then
        log "Wakame medium without a meta-data/ directory; skipped"
        return 1
    fi
    CTX_ID=$(first_line "$_wk/instance-id")
    CTX_HOST=$(first_line "$_wk/local-hostname")
    [ -n "$CTX_HOST" ] || CTX_HOST=$(first_line "$_wk/hostname")
    for _wk_k in "$_wk"/public-keys/*; do
        if [ -f "$_wk_k/openssh-key" ]; then
            head -c 65536 "$_wk_k/openssh-key" | add_keys
        elif [ -f "$_wk_k" ]; then
            head -c 65536 "$_wk_k" | add_keys
        fi
    done
    for _wk_u in "$MEDIUM_DIR/user-data" "$_wk/../user-data"; do
        if [ -f "$_wk_u" ]; then
            take_user_data "$_wk_u"
            break
        fi
    done
    # one directory per NIC, named by its MAC (FAT has no ":" — builders write "-"; the "mac"
    # file inside holds the real spelling). The NIC with the lowest x-metric gets the gateway,
    # as wakame-init does.
    _wk_pos=0
    : >"$WORK/wakame.gw"
    for _wk_d in "$_wk"/network/interfaces/macs/*; do
        [ -d "$_wk_d" ] || continue
        _wk_mac=$(first_line "$_wk_d/mac")
        [ -n "$_wk_mac" ] || _wk_mac=${_wk_d##*/}
        _wk_if=$(iface_spec "" "$_wk_mac" "$_wk_pos")
        _wk_ip=$(first_line "$_wk_d/local-ipv4s")
        if [ -n "$_wk_ip" ]; then
            plan_addr "$_wk_if" "$_wk_ip" "$(first_line "$_wk_d/x-netmask")"
            _wk_gw=$(first_line "$_wk_d/x-gateway")
            _wk_metric=$(first_line "$_wk_d/x-metric")
            case $_wk_metric in '' | *[!0-9]*) _wk_metric=9999 ;; esac
            [ -n "$_wk_gw" ] && printf '%s %s %s\n' "$_wk_metric" "$_wk_if" "$_wk_gw" >>"$WORK/wakame.gw"
            # x-dns: one server per line (imagewright's drive; Wakame-vdc's Windows tooling)
            [ -f "$_wk_d/x-dns" ] && plan_dns "$(head -c 4096 "$_wk_d/x-dns" | tr -d '\r' | tr '\n' ' ')"
        fi
        _wk_pos=$((_wk_pos + 1))
    done
    _wk_best=$(sort -n "$WORK/wakame.gw" | head -n 1)
    if [ -n "$_wk_best" ]; then
        # shellcheck disable=SC2086 # three words: metric, interface, gateway
        set -- $_wk_best
        plan_gateway "$2" "$3"
    fi
    for _wk_h in "$_wk"/extra-hosts/*; do
        [ -f "$_wk_h" ] || continue
        _wk_hn=$(clean_hostname "${_wk_h##*/}")
        _wk_hip=$(first_line "$_wk_h")
        if [ -n "$_wk_hn" ] && is_ipv4 "$_wk_hip"; then
            printf '%s %s\n' "$_wk_hip" "$_wk_hn" >>"$WORK/ctx/hosts"
        fi
    done
    return 0
}

