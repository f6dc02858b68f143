# ---------------------------------------------------------------------------------------------
# The context gathered from a source
#   CTX_ID, CTX_HOST          instance-id and host name as the source gave them
#   $WORK/ctx/keys            authorized_keys lines
#   $WORK/ctx/user-data       user-data, raw
#   $WORK/ctx/net             the network plan (see "Network" below)
#   $WORK/ctx/hosts           "IP NAME" lines for /etc/hosts (Wakame extra-hosts)
#   CTX_INIT                  init scripts on the medium to run, by name (OpenNebula INIT_SCRIPTS)
# ---------------------------------------------------------------------------------------------

reset_context() {
    CTX_ID=
    CTX_HOST=
    CTX_INIT=
    rm -rf "$WORK/ctx"
    mkdir -p "$WORK/ctx"
    : >"$WORK/ctx/keys"
    : >"$WORK/ctx/net"
    : >"$WORK/ctx/hosts"
}

# add_keys: authorized_keys lines from stdin. Blank lines, comments and CRs are dropped, and
# so is anything without a key type followed by base64 (authorized_keys options before the
# type are kept): metadata is not trusted to hold only keys.
KEY_LINE_RE='(^|[[:space:]])(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9]+|sk-[a-z0-9@.-]+)[[:space:]]+[A-Za-z0-9+/]+=*([[:space:]]|$)'
add_keys() {
    tr -d '\r' | sed 's/^[[:space:]]*//; s/[[:space:]]*$//' | grep -v '^#' | grep -v '^$' >"$WORK/keys.in"
    grep -E "$KEY_LINE_RE" "$WORK/keys.in" >>"$WORK/ctx/keys"
    _ak_bad=$(grep -cvE "$KEY_LINE_RE" "$WORK/keys.in")
    [ "${_ak_bad:-0}" -eq 0 ] || log "ssh: $_ak_bad line(s) that are not public keys ignored"
    return 0
}

# Keep the user-data; "#cloud-config" user-data also lends its ssh_authorized_keys and hostname.
take_user_data() {
    [ -f "$1" ] && [ -s "$1" ] || return 0
    cp "$1" "$WORK/ctx/user-data"
    if [ "$(head -c 13 "$1")" = "#cloud-config" ]; then
        if flatten_yaml "$1" >"$WORK/cloud-config.flat"; then
            flat_list "$WORK/cloud-config.flat" ssh_authorized_keys | add_keys
            if [ -z "$CTX_HOST" ]; then
                CTX_HOST=$(flat_get "$WORK/cloud-config.flat" fqdn)
                [ -n "$CTX_HOST" ] || CTX_HOST=$(flat_get "$WORK/cloud-config.flat" hostname)
            fi
            log "user-data is #cloud-config: its ssh_authorized_keys and hostname are used, the rest is not run"
        fi
    fi
}

# ---------------------------------------------------------------------------------------------
# Network plan: one line per fact, applied by apply_network
#   addr IFACE IP PREFIX      static IPv4 address
#   gateway IFACE GW          default route
#   route IFACE NET PREFIX GW a route (GW "-" for on-link)
#   dhcp IFACE                DHCP on that interface
#   dns IP / search DOMAIN    resolv.conf
# IFACE is NAME/MAC/INDEX with "-" for what is unknown ("eth0/-/0", "-/52:54:00:12:34:56/-"),
# resolved in the guest by MAC, then name, then position (ethN means position N).
# ---------------------------------------------------------------------------------------------

plan() {
    printf '%s\n' "$*" >>"$WORK/ctx/net"
}

plan_addr() {  # IFACE IP MASK-or-PREFIX
    if ! is_ipv4 "$2"; then
        log "network: ignoring address '$2' (not IPv4)"
        return 1
    fi
    _pa_prefix=$(mask_to_prefix "${3:-24}") || {
        log "network: ignoring address $2 with netmask '$3'"
        return 1
    }
    plan addr "$1" "$2" "$_pa_prefix"
}

plan_addr_cidr() {  # IFACE IP/PREFIX [MASK]
    case $2 in
        */*) plan_addr "$1" "${2%/*}" "${2#*/}" ;;
        *) plan_addr "$1" "$2" "${3:-24}" ;;
    esac
}

plan_gateway() {  # IFACE GW
    [ -n "$2" ] || return 0
    is_ipv4 "$2" || {
        log "network: ignoring gateway '$2'"
        return 0
    }
    if grep -q '^gateway ' "$WORK/ctx/net"; then
        log "network: a default gateway is already set; ignoring $2"
        return 0
    fi
    plan gateway "$1" "$2"
}

plan_route() {  # IFACE NET MASK-or-PREFIX GW
    is_ipv4 "$2" || return 0
    _pr_prefix=$(mask_to_prefix "$3") || return 0
    if [ "$2" = 0.0.0.0 ] && [ "$_pr_prefix" = 0 ]; then
        plan_gateway "$1" "$4"
        return 0
    fi
    _pr_gw=${4:--}
    [ "$_pr_gw" = - ] || is_ipv4 "$_pr_gw" || return 0
    plan route "$1" "$2" "$_pr_prefix" "$_pr_gw"
}

plan_dns() {  # IP... (blank or comma separated)
    for _pd in $(printf '%s' "$*" | tr ',' ' '); do
        is_ipv4 "$_pd" && plan dns "$_pd"
    done
    return 0
}

plan_search() {
    for _ps in $(printf '%s' "$*" | tr ',' ' '); do
        case $_ps in *[!A-Za-z0-9.-]*) continue ;; esac
        plan search "$_ps"
    done
    return 0
}

iface_spec() {  # NAME MAC INDEX (each may be empty) -> NAME/MAC/INDEX
    _is_name=$1
    case $_is_name in '' | *[!A-Za-z0-9._@-]*) _is_name=- ;; esac
    _is_mac=$(printf '%s' "$2" | tr 'A-F' 'a-f' | tr '-' ':')
    case $_is_mac in [0-9a-f][0-9a-f]:*) ;; *) _is_mac=- ;; esac
    _is_idx=$3
    case $_is_idx in '' | *[!0-9]*) _is_idx=- ;; esac
    printf '%s/%s/%s\n' "$_is_name" "$_is_mac" "$_is_idx"
}

