# ---------------------------------------------------------------------------------------------
# Source: OpenNebula context CD (with the older StratusLab variable names)
# ---------------------------------------------------------------------------------------------

ONE_VARS='VMID INSTANCE_ID INIT_SCRIPTS HOSTNAME SET_HOSTNAME SSH_PUBLIC_KEY SSH_KEY PUBLIC_KEY
START_SCRIPT START_SCRIPT_BASE64 USER_DATA USERDATA USER_DATA_ENCODING USERDATA_ENCODING
DNS SEARCH_DOMAIN GATEWAY
IP_PRIVATE NETMASK_PRIVATE GLOBAL_NETWORK GLOBAL_NETMASK DEFAULT_GATEWAY IP_PUBLIC NETMASK_PUBLIC'
for _ov_i in 0 1 2 3 4 5 6 7 8 9; do
    for _ov_s in IP MASK GATEWAY DNS MAC SEARCH_DOMAIN METHOD; do
        ONE_VARS="$ONE_VARS ETH${_ov_i}_$_ov_s"
    done
done

# context.sh is shell ("KEY='value'" with '\'' for a quote, values may span lines): let a
# separate shell with an empty environment read it and write each variable we want into its
# own file, so nothing it sets or runs can touch the agent's variables. HOSTNAME is unset
# first: bash sets it by itself, which would look like a HOSTNAME from the context.
read_context_sh() {
    mkdir -p "$2"
    # shellcheck disable=SC2016 # the inner shell expands them
    with_timeout 20 env -i PATH="$PATH" __IWA_OUT="$2" __IWA_VARS="$ONE_VARS" \
        sh -c 'unset HOSTNAME
               . "$1" >/dev/null 2>&1 </dev/null
               for __iwa_v in $__IWA_VARS; do
                   eval "__iwa_x=\${$__iwa_v-}"
                   [ -n "$__iwa_x" ] && printf "%s" "$__iwa_x" >"$__IWA_OUT/$__iwa_v"
               done
               exit 0' sh "$1" </dev/null >/dev/null 2>&1 3>&-
}

one() {
    cat "$WORK/one/$1" 2>/dev/null
}

source_opennebula() {
    media opennebula CONTEXT || return 1
    if [ ! -f "$MEDIUM_DIR/context.sh" ]; then
        log "OpenNebula medium without context.sh; skipped"
        return 1
    fi
    parseable "$MEDIUM_DIR/context.sh" || return 1
    rm -rf "$WORK/one"
    if ! read_context_sh "$MEDIUM_DIR/context.sh" "$WORK/one"; then
        log "context.sh could not be read; skipped"
        return 1
    fi
    # imagewright's builder writes INSTANCE_ID (and VMID only when the id is a number, as
    # OpenNebula's own VMIDs are)
    CTX_ID=$(one INSTANCE_ID)
    [ -n "$CTX_ID" ] || CTX_ID=$(one VMID)
    if [ -z "$CTX_ID" ]; then
        CTX_ID=one-$(digest_of "$MEDIUM_DIR/context.sh")
        log "context.sh has neither INSTANCE_ID nor VMID; using $CTX_ID"
    fi
    CTX_HOST=$(one SET_HOSTNAME)
    [ -n "$CTX_HOST" ] || CTX_HOST=$(one HOSTNAME)
    {
        one SSH_PUBLIC_KEY
        echo
        one SSH_KEY
        echo
        one PUBLIC_KEY
        echo
    } | add_keys
    # START_SCRIPT(_BASE64) is run once per instance like a user-data script; one-context runs
    # it with /bin/sh when it has no "#!" line, so give it one.
    if [ -s "$WORK/one/START_SCRIPT_BASE64" ]; then
        base64 -d <"$WORK/one/START_SCRIPT_BASE64" >"$WORK/one.start" 2>/dev/null ||
            log "START_SCRIPT_BASE64 is not valid base64; ignored"
    elif [ -s "$WORK/one/START_SCRIPT" ]; then
        cp "$WORK/one/START_SCRIPT" "$WORK/one.start"
    fi
    if [ -s "$WORK/one.start" ]; then
        if [ "$(head -c 2 "$WORK/one.start")" != '#!' ]; then
            { echo '#!/bin/sh'; cat "$WORK/one.start"; } >"$WORK/one.start2"
            mv "$WORK/one.start2" "$WORK/one.start"
        fi
        take_user_data "$WORK/one.start"
    else
        # cloud-init's USER_DATA / USERDATA, optionally base64
        for _on_v in USER_DATA USERDATA; do
            [ -s "$WORK/one/$_on_v" ] || continue
            _on_enc=$(one USER_DATA_ENCODING)
            [ -n "$_on_enc" ] || _on_enc=$(one USERDATA_ENCODING)
            if [ "$_on_enc" = base64 ]; then
                base64 -d <"$WORK/one/$_on_v" >"$WORK/one.ud" 2>/dev/null || : >"$WORK/one.ud"
            else
                cp "$WORK/one/$_on_v" "$WORK/one.ud"
            fi
            take_user_data "$WORK/one.ud"
            break
        done
    fi
    net_from_opennebula
    # INIT_SCRIPTS names the medium's scripts to run (one-context's default: init.sh)
    _on_scripts=$(one INIT_SCRIPTS)
    [ -n "$_on_scripts" ] || _on_scripts=init.sh
    set -f # the names are words from the medium, not patterns
    for _on_s in $_on_scripts; do
        case $_on_s in
            */* | .* | *[!A-Za-z0-9._-]*) log "INIT_SCRIPTS: '$_on_s' is not a file name on the medium; ignored" ;;
            *)
                if [ -f "$MEDIUM_DIR/$_on_s" ]; then
                    CTX_INIT="$CTX_INIT $_on_s"
                elif [ "$_on_s" != init.sh ] || [ -n "$(one INIT_SCRIPTS)" ]; then
                    log "INIT_SCRIPTS: $_on_s is not on the medium"
                fi
                ;;
        esac
    done
    set +f
    return 0
}

net_from_opennebula() {
    for _on_i in 0 1 2 3 4 5 6 7 8 9; do
        _on_if=$(iface_spec "eth$_on_i" "$(one "ETH${_on_i}_MAC")" "$_on_i")
        _on_ip=$(one "ETH${_on_i}_IP")
        if [ -n "$_on_ip" ]; then
            plan_addr "$_on_if" "$_on_ip" "$(one "ETH${_on_i}_MASK")"
            plan_gateway "$_on_if" "$(one "ETH${_on_i}_GATEWAY")"
        elif [ "$(one "ETH${_on_i}_METHOD")" = dhcp ]; then
            plan dhcp "$_on_if"
        fi
        plan_dns "$(one "ETH${_on_i}_DNS")"
        plan_search "$(one "ETH${_on_i}_SEARCH_DOMAIN")"
    done
    # StratusLab (OpenNebula 2.x era): a private NIC (eth0), a route to the site's global
    # network through it, a default gateway, and a public NIC (eth1).
    if [ -z "$(one ETH0_IP)" ] && [ -n "$(one IP_PRIVATE)" ]; then
        plan_addr "eth0/-/0" "$(one IP_PRIVATE)" "$(one NETMASK_PRIVATE)"
    fi
    if [ -n "$(one GLOBAL_NETWORK)" ]; then
        plan_route "eth0/-/0" "$(one GLOBAL_NETWORK)" "$(one GLOBAL_NETMASK)" -
    fi
    if [ -z "$(one ETH1_IP)" ] && [ -n "$(one IP_PUBLIC)" ]; then
        plan_addr "eth1/-/1" "$(one IP_PUBLIC)" "$(one NETMASK_PUBLIC)"
    fi
    plan_gateway "-/-/-" "$(one DEFAULT_GATEWAY)"
    plan_gateway "-/-/-" "$(one GATEWAY)"
    plan_dns "$(one DNS)"
    plan_search "$(one SEARCH_DOMAIN)"
}

