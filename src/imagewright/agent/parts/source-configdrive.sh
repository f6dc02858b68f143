# ---------------------------------------------------------------------------------------------
# Source: OpenStack config drive
# ---------------------------------------------------------------------------------------------

source_configdrive() {
    media configdrive config-2 CONFIG-2 || return 1
    _cd_dir=
    if [ -f "$MEDIUM_DIR/openstack/latest/meta_data.json" ]; then
        _cd_dir=$MEDIUM_DIR/openstack/latest
    else
        # no "latest": the newest dated version (names sort by date, globs sort by name)
        for _cd_v in "$MEDIUM_DIR"/openstack/*/meta_data.json; do
            [ -f "$_cd_v" ] && _cd_dir=${_cd_v%/meta_data.json}
        done
    fi
    if [ -z "$_cd_dir" ]; then
        log "config drive without openstack/*/meta_data.json; skipped"
        return 1
    fi
    if ! flatten_json "$_cd_dir/meta_data.json" >"$WORK/md.flat"; then
        log "config drive: meta_data.json is not valid JSON; skipped"
        return 1
    fi
    CTX_ID=$(flat_get "$WORK/md.flat" uuid)
    CTX_HOST=$(flat_get "$WORK/md.flat" hostname)
    [ -n "$CTX_HOST" ] || CTX_HOST=$(flat_get "$WORK/md.flat" name)
    # public_keys {name: key}; keys [{name, type, data}]
    flat_under "$WORK/md.flat" public_keys | add_keys
    for _cd_k in $(flat_keys "$WORK/md.flat" keys); do
        flat_get "$WORK/md.flat" "keys/$_cd_k/data" | add_keys
    done
    take_user_data "$_cd_dir/user_data"
    if [ -f "$_cd_dir/network_data.json" ]; then
        if flatten_json "$_cd_dir/network_data.json" >"$WORK/nd.flat"; then
            net_from_network_data "$WORK/nd.flat"
        else
            log "config drive: network_data.json is not valid JSON; ignored"
        fi
    fi
    return 0
}

# network_data.json: links [{id, ethernet_mac_address}], networks [{link, type ipv4|ipv4_dhcp,
# ip_address, netmask, routes [{network, netmask, gateway}], services [{type dns, address}]}],
# services [{type dns, address}].
net_from_network_data() {
    _nd=$1
    for _nd_n in $(flat_keys "$_nd" networks); do
        _nd_type=$(flat_get "$_nd" "networks/$_nd_n/type")
        _nd_link=$(flat_get "$_nd" "networks/$_nd_n/link")
        _nd_mac=
        _nd_idx=
        for _nd_l in $(flat_keys "$_nd" links); do
            if [ "$(flat_get "$_nd" "links/$_nd_l/id")" = "$_nd_link" ]; then
                _nd_mac=$(flat_get "$_nd" "links/$_nd_l/ethernet_mac_address")
                _nd_idx=$_nd_l
                break
            fi
        done
        _nd_if=$(iface_spec "" "$_nd_mac" "$_nd_idx")
        case $_nd_type in
            ipv4)
                plan_addr_cidr "$_nd_if" "$(flat_get "$_nd" "networks/$_nd_n/ip_address")" \
                    "$(flat_get "$_nd" "networks/$_nd_n/netmask")"
                for _nd_r in $(flat_keys "$_nd" "networks/$_nd_n/routes"); do
                    plan_route "$_nd_if" "$(flat_get "$_nd" "networks/$_nd_n/routes/$_nd_r/network")" \
                        "$(flat_get "$_nd" "networks/$_nd_n/routes/$_nd_r/netmask")" \
                        "$(flat_get "$_nd" "networks/$_nd_n/routes/$_nd_r/gateway")"
                done
                for _nd_s in $(flat_keys "$_nd" "networks/$_nd_n/services"); do
                    if [ "$(flat_get "$_nd" "networks/$_nd_n/services/$_nd_s/type")" = dns ]; then
                        plan_dns "$(flat_get "$_nd" "networks/$_nd_n/services/$_nd_s/address")"
                    fi
                done
                ;;
            ipv4_dhcp | dhcp4 | dhcp) plan dhcp "$_nd_if" ;;
            *) log "network_data.json: network $_nd_n of type '$_nd_type' not handled" ;;
        esac
    done
    for _nd_s in $(flat_keys "$_nd" services); do
        if [ "$(flat_get "$_nd" "services/$_nd_s/type")" = dns ]; then
            plan_dns "$(flat_get "$_nd" "services/$_nd_s/address")"
        fi
    done
}

