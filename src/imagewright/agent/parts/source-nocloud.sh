# ---------------------------------------------------------------------------------------------
# Source: cloud-init NoCloud
# ---------------------------------------------------------------------------------------------

source_nocloud() {
    media nocloud cidata CIDATA || return 1
    if [ ! -f "$MEDIUM_DIR/meta-data" ]; then
        log "NoCloud medium without meta-data; skipped"
        return 1
    fi
    flatten_yaml "$MEDIUM_DIR/meta-data" >"$WORK/md.flat" || return 1
    CTX_ID=$(flat_get "$WORK/md.flat" instance-id)
    [ -n "$CTX_ID" ] || CTX_ID=$(flat_get "$WORK/md.flat" instance_id)
    if [ -z "$CTX_ID" ]; then
        CTX_ID=iid-$(digest_of "$MEDIUM_DIR/meta-data")
        log "meta-data has no instance-id (cloud-init requires one); using $CTX_ID"
    fi
    CTX_HOST=$(flat_get "$WORK/md.flat" local-hostname)
    [ -n "$CTX_HOST" ] || CTX_HOST=$(flat_get "$WORK/md.flat" hostname)
    # public-keys: a string, a list, or a mapping {name: key}
    flat_under "$WORK/md.flat" public-keys | add_keys
    take_user_data "$MEDIUM_DIR/user-data"
    if [ -f "$MEDIUM_DIR/network-config" ]; then
        if flatten_yaml "$MEDIUM_DIR/network-config" >"$WORK/nc.flat"; then
            net_from_network_config "$WORK/nc.flat"
        fi
    fi
    return 0
}

# cloud-init network-config, version 1 or 2 (optionally under a top-level "network:" key).
net_from_network_config() {
    _nc=$1
    if [ -n "$(flat_get "$_nc" network/version)" ]; then
        sed 's|^network/||' "$_nc" >"$_nc.inner"
        _nc=$_nc.inner
    fi
    case $(flat_get "$_nc" version) in
        2) net_from_netplan "$_nc" ;;
        1) net_from_netv1 "$_nc" ;;
        *) log "network-config: unknown version; ignored" ;;
    esac
}

net_from_netplan() {
    _np=$1
    _np_pos=0
    for _np_id in $(flat_keys "$_np" ethernets); do
        _np_p=ethernets/$_np_id
        _np_name=$(flat_get "$_np" "$_np_p/set-name")
        [ -n "$_np_name" ] || _np_name=$(flat_get "$_np" "$_np_p/match/name")
        [ -n "$_np_name" ] || _np_name=$_np_id
        case $_np_name in *'*'*) _np_name= ;; esac
        _np_if=$(iface_spec "$_np_name" "$(flat_get "$_np" "$_np_p/match/macaddress")" "")
        _np_static=0
        for _np_a in $(flat_list "$_np" "$_np_p/addresses"); do
            case $_np_a in *:*) continue ;; esac
            plan_addr_cidr "$_np_if" "$_np_a" && _np_static=1
        done
        plan_gateway "$_np_if" "$(flat_get "$_np" "$_np_p/gateway4")"
        for _np_r in $(flat_keys "$_np" "$_np_p/routes"); do
            _np_to=$(flat_get "$_np" "$_np_p/routes/$_np_r/to")
            _np_via=$(flat_get "$_np" "$_np_p/routes/$_np_r/via")
            case $_np_to in
                default | 0.0.0.0/0) plan_gateway "$_np_if" "$_np_via" ;;
                */*) plan_route "$_np_if" "${_np_to%/*}" "${_np_to#*/}" "$_np_via" ;;
            esac
        done
        plan_dns "$(flat_list "$_np" "$_np_p/nameservers/addresses")"
        plan_search "$(flat_list "$_np" "$_np_p/nameservers/search")"
        if [ "$_np_static" = 0 ] && [ "$(flat_get "$_np" "$_np_p/dhcp4")" = true ]; then
            plan dhcp "$_np_if"
        fi
        _np_pos=$((_np_pos + 1))
    done
}

net_from_netv1() {
    _n1=$1
    for _n1_c in $(flat_keys "$_n1" config); do
        _n1_p=config/$_n1_c
        case $(flat_get "$_n1" "$_n1_p/type") in
            physical)
                _n1_if=$(iface_spec "$(flat_get "$_n1" "$_n1_p/name")" "$(flat_get "$_n1" "$_n1_p/mac_address")" "")
                for _n1_s in $(flat_keys "$_n1" "$_n1_p/subnets"); do
                    _n1_sp=$_n1_p/subnets/$_n1_s
                    case $(flat_get "$_n1" "$_n1_sp/type") in
                        static | static4)
                            plan_addr_cidr "$_n1_if" "$(flat_get "$_n1" "$_n1_sp/address")" \
                                "$(flat_get "$_n1" "$_n1_sp/netmask")"
                            plan_gateway "$_n1_if" "$(flat_get "$_n1" "$_n1_sp/gateway")"
                            plan_dns "$(flat_list "$_n1" "$_n1_sp/dns_nameservers")"
                            plan_search "$(flat_list "$_n1" "$_n1_sp/dns_search")"
                            for _n1_r in $(flat_keys "$_n1" "$_n1_sp/routes"); do
                                plan_route "$_n1_if" "$(flat_get "$_n1" "$_n1_sp/routes/$_n1_r/network")" \
                                    "$(flat_get "$_n1" "$_n1_sp/routes/$_n1_r/netmask")" \
                                    "$(flat_get "$_n1" "$_n1_sp/routes/$_n1_r/gateway")"
                            done
                            ;;
                        dhcp | dhcp4) plan dhcp "$_n1_if" ;;
                    esac
                done
                ;;
            nameserver)
                plan_dns "$(flat_list "$_n1" "$_n1_p/address")" "$(flat_get "$_n1" "$_n1_p/address")"
                plan_search "$(flat_list "$_n1" "$_n1_p/search")" "$(flat_get "$_n1" "$_n1_p/search")"
                ;;
        esac
    done
}

