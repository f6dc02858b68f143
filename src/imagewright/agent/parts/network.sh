# ---------------------------------------------------------------------------------------------
# Network: interfaces, DHCP, static configuration
# ---------------------------------------------------------------------------------------------

# Ethernet interfaces (type 1) in kernel order (ifindex). Those backed by a device come first;
# virtual ones (veth, ...) are used only when there is no other (a network namespace in tests).
list_ifaces() {
    : >"$WORK/ifaces"
    for _lf_p in "$R"/sys/class/net/*; do
        [ -e "$_lf_p" ] || continue
        _lf_n=${_lf_p##*/}
        [ "$_lf_n" = lo ] && continue
        case $_lf_n in *[!A-Za-z0-9._@-]*) continue ;; esac
        _lf_t=$(cat "$_lf_p/type" 2>/dev/null)
        [ "${_lf_t:-1}" = 1 ] || continue
        _lf_i=$(cat "$_lf_p/ifindex" 2>/dev/null)
        case $_lf_i in '' | *[!0-9]*) _lf_i=9999 ;; esac
        _lf_phys=1
        [ -e "$_lf_p/device" ] && _lf_phys=0
        printf '%s %s %s\n' "$_lf_phys" "$_lf_i" "$_lf_n" >>"$WORK/ifaces"
    done
    if grep -q '^0 ' "$WORK/ifaces"; then
        grep '^0 ' "$WORK/ifaces" | sort -n -k2 | awk '{ print $3 }'
    else
        sort -n -k2 "$WORK/ifaces" | awk '{ print $3 }'
    fi
}

iface_mac() {
    tr 'A-F' 'a-f' <"$R/sys/class/net/$1/address" 2>/dev/null
}

# NAME/MAC/INDEX -> an interface of this machine, or nothing.
resolve_iface() {
    _ri_name=${1%%/*}
    _ri_rest=${1#*/}
    _ri_mac=${_ri_rest%%/*}
    _ri_idx=${_ri_rest#*/}
    if [ "$_ri_mac" != - ]; then
        for _ri_n in $(list_ifaces); do
            if [ "$(iface_mac "$_ri_n")" = "$_ri_mac" ]; then
                echo "$_ri_n"
                return 0
            fi
        done
    fi
    if [ "$_ri_name" != - ] && [ -e "$R/sys/class/net/$_ri_name" ]; then
        echo "$_ri_name"
        return 0
    fi
    if [ "$_ri_idx" = - ]; then
        case $_ri_name in eth[0-9] | eth[0-9][0-9]) _ri_idx=${_ri_name#eth} ;; esac
    fi
    if [ "$_ri_idx" != - ]; then
        list_ifaces | sed -n "$((_ri_idx + 1))p"
    fi
}

# Any IPv4 address besides loopback? /proc/net/fib_trie lists every local address as
# "|-- ADDR" followed by "/32 host LOCAL"; reading it needs no tool and works in a sandbox.
has_ipv4_address() {
    [ -r "$R/proc/net/fib_trie" ] || return 1
    awk '/-- [0-9.]+$/ { a = $NF; next }
         /\/32 host LOCAL/ { if (a !~ /^127\./) { found = 1; exit } }
         END { exit !found }' "$R/proc/net/fib_trie"
}

# The lease handler udhcpc runs, written where it may be executed: /run (the agent's work
# directory) is mounted noexec by initramfs-tools' init on Debian and Ubuntu, and there udhcpc
# got its lease and silently could not apply it. Tried: the work directory, then the root
# filesystem's /var/lib/imagewright-agent, then /tmp. Sets UDHCPC_SCRIPT.
write_udhcpc_script() {
    for _us_dir in "$WORK" "$R/var/lib/imagewright-agent" "$R/tmp"; do
        mkdir -p "$_us_dir" 2>/dev/null || continue
        UDHCPC_SCRIPT=$_us_dir/udhcpc.script
        write_udhcpc_handler "$UDHCPC_SCRIPT" || continue
        "$UDHCPC_SCRIPT" probe >/dev/null 2>&1 && return 0
        rm -f "$UDHCPC_SCRIPT"
    done
    return 1
}

write_udhcpc_handler() {
    cat >"$1" <<'EOF'
#!/bin/sh
# udhcpc event handler written by imagewright-agent: applies the lease with ip (or ifconfig/route)
R=${IMAGEWRIGHT_AGENT_ROOT:-}
case "$1" in
    deconfig)
        if command -v ip >/dev/null 2>&1; then
            ip -4 addr flush dev "$interface" 2>/dev/null
            ip link set dev "$interface" up
        else
            ifconfig "$interface" 0.0.0.0 up
        fi
        ;;
    bound | renew)
        if command -v ip >/dev/null 2>&1; then
            ip -4 addr flush dev "$interface"
            ip addr add "$ip/${mask:-24}" dev "$interface"
            ip link set dev "$interface" up
            for r in $router; do
                ip route replace default via "$r" dev "$interface"
                break
            done
        else
            if [ -n "$subnet" ]; then ifconfig "$interface" "$ip" netmask "$subnet" up; else ifconfig "$interface" "$ip" up; fi
            for r in $router; do
                route del default 2>/dev/null
                route add default gw "$r" dev "$interface"
                break
            done
        fi
        if [ -n "$dns" ] && [ ! -L "$R/etc/resolv.conf" ]; then
            {
                echo "# written by imagewright-agent from a DHCP lease"
                [ -n "$domain" ] && echo "search $domain"
                for d in $dns; do echo "nameserver $d"; done
            } >"$R/etc/resolv.conf"
        fi
        ;;
esac
exit 0
EOF
    chmod 700 "$1"
}

# DHCP on one interface with whichever client exists; 0 once it has an address.
dhcp_iface() {
    _dh_if=$1
    live ip link set dev "$_dh_if" up >/dev/null 2>&1 || true
    if have udhcpc; then
        if write_udhcpc_script; then
            live_timeout 30 udhcpc -i "$_dh_if" -n -q -t 4 -T 2 -s "$UDHCPC_SCRIPT" && return 0
        else
            log "network: no directory lets udhcpc run its lease handler"
        fi
    fi
    if have dhclient; then
        live_timeout 30 dhclient -1 "$_dh_if" && return 0
    fi
    if have dhcpcd; then
        live_timeout 30 dhcpcd -1 -t 20 "$_dh_if" && return 0
    fi
    if networkd_running; then
        # systemd-networkd is running: hand it a runtime .network file asking for DHCP
        mkdir -p "$R/run/systemd/network"
        printf '[Match]\nName=%s\n\n[Network]\nDHCP=ipv4\n' "$_dh_if" >"$R/run/systemd/network/10-imagewright-$_dh_if.network"
        live networkctl reload
        live networkctl reconfigure "$_dh_if"
        [ "$DRYRUN" = 1 ] && return 0
        _dh_wait=0
        while [ "$_dh_wait" -lt 15 ]; do
            has_ipv4_address && return 0
            sleep 1
            _dh_wait=$((_dh_wait + 1))
        done
    fi
    return 1
}

# systemd-networkd is running (not merely installed). The agent's unit is ordered before
# network-pre.target and networkd after it, so on a booting system networkd has not started
# yet: asking it (networkctl) then only times out, twice 25 s, and no lease ever comes.
networkd_running() {
    have networkctl && [ -d "$R/run/systemd/netif" ] || return 1
    [ "$DRYRUN" = 1 ] && return 0
    ! have systemctl || systemctl is-active --quiet systemd-networkd.service
}

have_dhcp_client() {
    have udhcpc || have dhclient || have dhcpcd || networkd_running
}

# DHCP on the first interface that gets a lease (at most three are tried); once per run.
DHCP_TRIED=0
dhcp_any() {
    [ "$DHCP_TRIED" = 0 ] || return "$DHCP_RESULT"
    DHCP_TRIED=1
    DHCP_RESULT=1
    dhcp_any_once && DHCP_RESULT=0
    return "$DHCP_RESULT"
}

dhcp_any_once() {
    if [ "$CONF_DHCP" != yes ]; then
        log "DHCP is disabled in agent.conf"
        return 1
    fi
    if ! have_dhcp_client; then
        log "no DHCP client (udhcpc, dhclient, dhcpcd) is installed and systemd-networkd is not running yet"
        return 1
    fi
    _da_n=0
    for _da_if in $(list_ifaces); do
        _da_n=$((_da_n + 1))
        [ "$_da_n" -le 3 ] || break
        log "network: DHCP on $_da_if"
        if dhcp_iface "$_da_if"; then
            return 0
        fi
        log "network: no DHCP lease on $_da_if"
    done
    [ "$_da_n" -gt 0 ] || log "network: no Ethernet interface found"
    return 1
}

# The EC2 service is only reachable once some interface has an address.
network_for_metadata() {
    if has_ipv4_address; then
        log "network: an interface already has an address"
        return 0
    fi
    dhcp_any
}

# Is ADDR/PREFIX already on IF? (a query of the running system: never true in dry-run)
iface_has_addr() {
    [ "$DRYRUN" = 1 ] && return 1
    have ip || return 1
    ip -4 -o addr show dev "$1" 2>/dev/null | grep -q " inet $2/$3 "
}

apply_network() {
    _an_plan=$WORK/ctx/net
    if [ ! -s "$_an_plan" ]; then
        if has_ipv4_address; then
            log "network: no static configuration given; an interface already has an address"
        else
            [ "$DHCP_TRIED" = 1 ] || log "network: no static configuration given; trying DHCP"
            dhcp_any
        fi
        return 0
    fi
    if have ip; then
        NET_TOOL=ip
    elif have ifconfig; then
        NET_TOOL=ifconfig
    else
        log "network: neither ip nor ifconfig is installed; static configuration not applied"
        return 0
    fi
    while read -r _an_kind _an_a _an_b _an_c _an_d; do
        case $_an_kind in
            addr)
                _an_if=$(resolve_iface "$_an_a")
                if [ -z "$_an_if" ]; then
                    log "network: no interface matches $_an_a; address $_an_b/$_an_c not set"
                    continue
                fi
                log "network: $_an_if address $_an_b/$_an_c"
                if iface_has_addr "$_an_if" "$_an_b" "$_an_c"; then
                    log "network: $_an_if already has $_an_b/$_an_c"
                    continue
                fi
                if [ "$NET_TOOL" = ip ]; then
                    live ip link set dev "$_an_if" up
                    live ip -4 addr flush dev "$_an_if"
                    live ip addr add "$_an_b/$_an_c" dev "$_an_if"
                else
                    live ifconfig "$_an_if" "$_an_b" netmask "$(prefix_to_mask "$_an_c")" up
                fi
                ;;
            dhcp)
                _an_if=$(resolve_iface "$_an_a")
                if [ -n "$_an_if" ]; then
                    log "network: DHCP on $_an_if (asked for by the source)"
                    [ "$CONF_DHCP" = yes ] && have_dhcp_client && dhcp_iface "$_an_if"
                fi
                ;;
        esac
    done <"$_an_plan"
    # routes after every address, so that gateways are reachable
    while read -r _an_kind _an_a _an_b _an_c _an_d; do
        _an_if=
        [ "$_an_kind" = route ] || [ "$_an_kind" = gateway ] || continue
        [ "$_an_a" = "-/-/-" ] || _an_if=$(resolve_iface "$_an_a")
        case $_an_kind in
            gateway)
                log "network: default gateway $_an_b${_an_if:+ on $_an_if}"
                if [ "$NET_TOOL" = ip ]; then
                    if [ -n "$_an_if" ]; then
                        live ip route replace default via "$_an_b" dev "$_an_if"
                    else
                        live ip route replace default via "$_an_b"
                    fi
                else
                    live route del default >/dev/null 2>&1
                    if [ -n "$_an_if" ]; then
                        live route add default gw "$_an_b" dev "$_an_if"
                    else
                        live route add default gw "$_an_b"
                    fi
                fi
                ;;
            route)
                log "network: route $_an_b/$_an_c via $_an_d${_an_if:+ on $_an_if}"
                if [ "$NET_TOOL" = ip ]; then
                    if [ "$_an_d" = - ]; then
                        [ -n "$_an_if" ] && live ip route replace "$_an_b/$_an_c" dev "$_an_if"
                    elif [ -n "$_an_if" ]; then
                        live ip route replace "$_an_b/$_an_c" via "$_an_d" dev "$_an_if"
                    else
                        live ip route replace "$_an_b/$_an_c" via "$_an_d"
                    fi
                else
                    _an_mask=$(prefix_to_mask "$_an_c")
                    if [ "$_an_d" = - ]; then
                        [ -n "$_an_if" ] && live route add -net "$_an_b" netmask "$_an_mask" dev "$_an_if"
                    else
                        live route add -net "$_an_b" netmask "$_an_mask" gw "$_an_d"
                    fi
                fi
                ;;
        esac
    done <"$_an_plan"
    write_resolv_conf
}

write_resolv_conf() {
    _wr_dns=$(awk '$1 == "dns" && !seen[$2]++ { print "nameserver " $2 }' "$WORK/ctx/net" | head -n 3)
    [ -n "$_wr_dns" ] || return 0
    _wr_search=$(awk '$1 == "search" && !seen[$2]++ { printf "%s%s", (n++ ? " " : ""), $2 }' "$WORK/ctx/net")
    if [ -L "$R/etc/resolv.conf" ]; then
        log "network: /etc/resolv.conf is a link (managed by a resolver service); left alone"
        return 0
    fi
    {
        echo "# written by imagewright-agent from the instance's metadata"
        [ -n "$_wr_search" ] && echo "search $_wr_search"
        printf '%s\n' "$_wr_dns"
    } >"$WORK/resolv.conf"
    if replace_file "$R/etc/resolv.conf" "$WORK/resolv.conf" 644; then
        log "network: wrote /etc/resolv.conf ($(echo "$_wr_dns" | awk '{ printf "%s%s", (n++ ? " " : ""), $2 }'))"
    fi
}

