#!/bin/sh
# imagewright-agent — the in-guest contextualization agent of imagewright.
#
# Runs at every boot (a systemd oneshot unit, rc.local or an init.d script installed by
# `imagewright prepare --agent`), finds the data the cloud hands this instance, applies it,
# and prints exactly one line at the end:
#
#   imagewright-agent: ready instance-id=<id> hostname=<name> source=<configdrive|nocloud|opennebula|wakame|ec2|none>
#
# <name> is the short host name it set (web1 for web1.example.com, which goes into /etc/hosts),
# or the machine's own when the source gives none; <id> is "none" when no source answered.
# Instance ids and names are cleaned first ([A-Za-z0-9._-] and [A-Za-z0-9.-]; see clean_*).
#
# Sources, tried in this order; the first one that yields data wins:
#   configdrive  OpenStack config drive: filesystem labelled config-2 / CONFIG-2,
#                openstack/latest/meta_data.json (+ user_data, network_data.json)
#   nocloud      cloud-init NoCloud seed: label cidata / CIDATA, meta-data (+ user-data, network-config)
#   opennebula   OpenNebula context CD: label CONTEXT, context.sh (+ init.sh), incl. StratusLab names
#   wakame       Wakame-vdc metadata drive: VFAT disk labelled METADATA holding a meta-data/ tree
#   ec2          EC2 instance metadata service at 169.254.169.254: IMDSv2 token first, else IMDSv1
#
# What it applies, and how often (like cloud-init's per-instance and per-boot modules):
#   once per instance-id: hostname (/etc/hostname, the 127.0.1.1 line of /etc/hosts),
#       authorized_keys, fresh SSH host keys (cloud-init deletes and regenerates them on a new
#       instance too, so clones never share host keys; HOST_KEYS=missing turns that off),
#       OpenNebula's init scripts (INIT_SCRIPTS, default init.sh), and the user-data when it
#       is a script (#!; OpenNebula's START_SCRIPT counts as one). #cloud-config user-data is
#       not run; only its ssh_authorized_keys and hostname are used.
#   every boot: the running hostname from /etc/hostname, the network (static from the source,
#       else DHCP when no interface has an address), missing SSH host keys, Wakame extra-hosts,
#       and growing the root partition and filesystem when the disk has room.
# A second boot with the same instance-id therefore changes no file (only the log grows) and
# never re-runs user-data; a new instance-id re-applies every per-instance step.
#
# Files:
#   /etc/imagewright/agent.conf        optional settings, KEY=VALUE lines (not sourced, parsed):
#       DEFAULT_USER=debian            whose authorized_keys receive the keys (default root)
#       SOURCES="nocloud ec2"          which sources to try, in this order (default: all, as above)
#       GROW_ROOT=no                   do not grow the root partition/filesystem (default yes)
#       HOST_KEYS=missing              only create missing host keys (default per-instance)
#       DHCP=no                        never run a DHCP client (default yes)
#   /var/lib/imagewright-agent/<instance-id>/   per-instance state: done.* markers, the user-data
#       script, user-data.log (its output), user-data.status (its exit status)
#   /var/lib/imagewright-agent/.last-instance-id
#   /var/log/imagewright-agent.log     a copy of everything printed
#
# Never fails the boot: every error is logged and the script exits 0.
# Everything is printed with the prefix "imagewright-agent:" on standard output, which the boot
# hook connects to the console (StandardOutput=journal+console, or >/dev/console).
#
# Security: metadata is data. context.sh is read by a separate shell with an empty environment;
# values never reach eval or an unquoted command line; keys must look like public keys; paths
# from the medium are checked; the files parsed are bounded (1 MiB).
#
# Test hooks (few, and only these):
#   IMAGEWRIGHT_AGENT_ROOT=DIR     every absolute path the agent reads or writes (/etc, /var, /root,
#                                  /home, /run, /tmp, /dev, /proc, /sys) resolves under DIR
#   IMAGEWRIGHT_AGENT_DRYRUN=1     commands that change or query the running system (hostname, ip,
#                                  ifconfig, route, DHCP clients, mount, modprobe, sfdisk writes,
#                                  partx, resize2fs, blkid/findfs probes) are logged as
#                                  "dry-run: COMMAND" instead of run; files under the root are still
#                                  written, host keys still generated, user-data still run;
#                                  media are looked for only under the root
#   IMAGEWRIGHT_AGENT_MEDIA_DIR=DIR  a directory standing for an already mounted medium, of kind
#   IMAGEWRIGHT_AGENT_MEDIA_KIND=K   configdrive|nocloud|opennebula|wakame (guessed when empty)
#   IMAGEWRIGHT_AGENT_IMDS=URL     base URL of the EC2 metadata service (http://HOST[:PORT])
#   IMAGEWRIGHT_AGENT_LIB=1        when sourced: define the functions, run nothing (unit tests)
#
# Portability: POSIX sh only (busybox ash, dash, bash); POSIX awk (mawk, gawk, busybox awk);
# no python, no jq needed (jq is used for JSON when present). Functions use prefixed names
# instead of `local`, which POSIX does not define.

AGENT_PREFIX='imagewright-agent:'
LC_ALL=C
export LC_ALL
: "${PATH:=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"

R=${IMAGEWRIGHT_AGENT_ROOT:-}
R=${R%/}
DRYRUN=${IMAGEWRIGHT_AGENT_DRYRUN:-0}
IMDS_BASE=${IMAGEWRIGHT_AGENT_IMDS:-http://169.254.169.254}
STATE="$R/var/lib/imagewright-agent"
LOG_FILE="$R/var/log/imagewright-agent.log"
LOCK_DIR="$R/run/imagewright-agent.lock"
WORK=
MEDIUM_DIR=
MEDIUM_MOUNTED=0
MAX_PARSE_BYTES=1048576   # metadata files we parse are small; refuse anything bigger

# ---------------------------------------------------------------------------------------------
# Logging and running commands
# ---------------------------------------------------------------------------------------------

# fd 3 is the agent's console; command substitutions capture fd 1 only, so functions that
# return a value on stdout can still log.
exec 3>&1

log() {
    printf '%s %s\n' "$AGENT_PREFIX" "$*" >&3
    if [ -n "$LOG_FILE" ]; then
        printf '%s %s\n' "$AGENT_PREFIX" "$*" >>"$LOG_FILE" 2>/dev/null || LOG_FILE=
    fi
}

have() {
    command -v "$1" >/dev/null 2>&1
}

# Run a command, copy its output into the log (indented), return its status.
run_logged() {
    _rl_out=$("$@" </dev/null 2>&1 3>&-)
    _rl_rc=$?
    if [ -n "$_rl_out" ]; then
        printf '%s\n' "$_rl_out" >"$WORK/run.out" 2>/dev/null
        while IFS= read -r _rl_line; do
            log "  $_rl_line"
        done <"$WORK/run.out"
    fi
    return $_rl_rc
}

# A command that changes (or probes) the running system: logged instead of run in dry-run.
live() {
    if [ "$DRYRUN" = 1 ]; then
        log "dry-run: $*"
        return 0
    fi
    run_logged "$@"
}

# Same, stopped after SECONDS (for DHCP clients, which may wait a long time for a lease).
live_timeout() {
    _lt_secs=$1
    shift
    if [ "$DRYRUN" = 1 ]; then
        log "dry-run: $*"
        return 0
    fi
    run_logged with_timeout "$_lt_secs" "$@"
}

# Same, with INPUT on the command's standard input.
live_input() {
    _li_input=$1
    shift
    if [ "$DRYRUN" = 1 ]; then
        log "dry-run: printf '$_li_input' | $*"
        return 0
    fi
    _li_out=$(printf '%s\n' "$_li_input" | "$@" 2>&1 3>&-)
    _li_rc=$?
    if [ -n "$_li_out" ]; then
        printf '%s\n' "$_li_out" >"$WORK/run.out" 2>/dev/null
        while IFS= read -r _li_line; do
            log "  $_li_line"
        done <"$WORK/run.out"
    fi
    return $_li_rc
}

# timeout(1) exists as coreutils and as a busybox applet; busybox before 1.30 wanted "-t SECS".
TIMEOUT_STYLE=
with_timeout() {
    _wt_secs=$1
    shift
    if [ -z "$TIMEOUT_STYLE" ]; then
        if have timeout && timeout 5 true >/dev/null 2>&1; then
            TIMEOUT_STYLE=plain
        elif have timeout && timeout -t 5 true >/dev/null 2>&1; then
            TIMEOUT_STYLE=dash-t
        else
            TIMEOUT_STYLE=none
        fi
    fi
    case $TIMEOUT_STYLE in
        plain) timeout "$_wt_secs" "$@" ;;
        dash-t) timeout -t "$_wt_secs" "$@" ;;
        *) "$@" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Small text helpers
# ---------------------------------------------------------------------------------------------

trim() {
    printf '%s' "$1" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//'
}

# First line of a file, without CR and surrounding blanks (values are one line; bounded read).
first_line() {
    [ -f "$1" ] || return 1
    head -c 4096 "$1" 2>/dev/null | head -n 1 | tr -d '\r' | sed 's/^[[:space:]]*//; s/[[:space:]]*$//'
}

file_size() {
    wc -c <"$1" 2>/dev/null | tr -d ' '
}

# A parseable file: exists and is no bigger than MAX_PARSE_BYTES.
parseable() {
    [ -f "$1" ] || return 1
    _pa_size=$(file_size "$1")
    if [ "${_pa_size:-0}" -gt "$MAX_PARSE_BYTES" ]; then
        log "$1 is ${_pa_size} bytes, more than the $MAX_PARSE_BYTES this agent parses; ignored"
        return 1
    fi
    return 0
}

# Short stable digest of a file, for an instance-id when the source names none.
digest_of() {
    if have md5sum; then
        md5sum <"$1" | cut -c1-16
    elif have sha256sum; then
        sha256sum <"$1" | cut -c1-16
    else
        cksum <"$1" | cut -d' ' -f1
    fi
}

# An instance-id usable as a directory name and in the ready line: [A-Za-z0-9._-], no leading
# dot, at most 128 characters.
clean_instance_id() {
    printf '%s' "$1" | tr -d '\r\n' | tr -c 'A-Za-z0-9._-' '_' | sed 's/^\.*//' | cut -c1-128
}

# A host name made of [A-Za-z0-9.-] (anything else becomes "-"), no leading or trailing dot or
# dash, at most 253 characters.
clean_hostname() {
    printf '%s' "$1" | tr -d '\r\n' | sed 's/^[[:space:]]*//; s/[[:space:]]*$//' |
        tr -c 'A-Za-z0-9.-' '-' | sed 's/^[-.]*//; s/[-.]*$//' | cut -c1-253
}

is_ipv4() {
    case $1 in
        '' | *[!0-9.]* | .* | *. | *..*) return 1 ;;
    esac
    _ip_n=0
    for _ip_o in $(printf '%s' "$1" | tr '.' ' '); do
        [ ${#_ip_o} -le 3 ] && [ "$_ip_o" -le 255 ] || return 1
        _ip_n=$((_ip_n + 1))
    done
    [ "$_ip_n" -eq 4 ]
}

# Prefix length from "255.255.255.0", "/24", "24" or " netmask 255.255.255.0" (the StratusLab
# NETMASK_* variables were pasted after the address, so they come in several spellings).
mask_to_prefix() {
    _mp=$(printf '%s' "$1" | sed 's/^[[:space:]]*//; s/^netmask[[:space:]]*//; s/^\///; s/[[:space:]]*$//')
    case $_mp in
        *.*)
            is_ipv4 "$_mp" || return 1
            _mp_bits=0
            _mp_end=0
            for _mp_o in $(printf '%s' "$_mp" | tr '.' ' '); do
                if [ "$_mp_end" = 1 ]; then
                    [ "$_mp_o" -eq 0 ] || return 1
                    continue
                fi
                case $_mp_o in
                    255) _mp_bits=$((_mp_bits + 8)) ;;
                    254) _mp_bits=$((_mp_bits + 7)) _mp_end=1 ;;
                    252) _mp_bits=$((_mp_bits + 6)) _mp_end=1 ;;
                    248) _mp_bits=$((_mp_bits + 5)) _mp_end=1 ;;
                    240) _mp_bits=$((_mp_bits + 4)) _mp_end=1 ;;
                    224) _mp_bits=$((_mp_bits + 3)) _mp_end=1 ;;
                    192) _mp_bits=$((_mp_bits + 2)) _mp_end=1 ;;
                    128) _mp_bits=$((_mp_bits + 1)) _mp_end=1 ;;
                    0) _mp_end=1 ;;
                    *) return 1 ;;
                esac
            done
            echo "$_mp_bits"
            ;;
        '' | *[!0-9]*) return 1 ;;
        *)
            [ "$_mp" -le 32 ] || return 1
            echo "$((_mp + 0))"
            ;;
    esac
}

prefix_to_mask() {
    _pm_left=$1
    _pm_out=
    for _pm_i in 1 2 3 4; do
        if [ "$_pm_left" -ge 8 ]; then
            _pm_o=255
            _pm_left=$((_pm_left - 8))
        else
            _pm_o=$((256 - (1 << (8 - _pm_left))))
            [ "$_pm_left" -eq 0 ] && _pm_o=0
            _pm_left=0
        fi
        _pm_out="$_pm_out${_pm_out:+.}$_pm_o"
    done
    echo "$_pm_out"
}

# Replace DEST by NEW only when the content differs (keeps the inode and mode of DEST when it
# exists); prints nothing, returns 0 when DEST changed, 1 when it was already right.
replace_file() {
    _rf_dest=$1
    _rf_new=$2
    _rf_mode=${3:-644}
    if [ -f "$_rf_dest" ] && cmp -s "$_rf_new" "$_rf_dest"; then
        return 1
    fi
    mkdir -p "${_rf_dest%/*}"
    if [ -f "$_rf_dest" ]; then
        cat "$_rf_new" >"$_rf_dest"
    else
        cp "$_rf_new" "$_rf_dest" && chmod "$_rf_mode" "$_rf_dest"
    fi
    return 0
}

# ---------------------------------------------------------------------------------------------
# Structured data: YAML (a subset), JSON, flattened to "path<TAB>value" lines.
#
# Both readers print one line per scalar: the path of keys and list indexes joined by "/"
# ("ethernets/eth0/addresses/0") and the value with backslash, tab, newline and CR written as
# \\ \t \n \r — the same lines `jq -r '... | @tsv'` prints, so either can feed flat_get.
# ---------------------------------------------------------------------------------------------

AWK_COMMON='
function esc(v,   out, i, c) {
    if (v !~ /[\\\t\n\r]/) return v
    out = ""
    for (i = 1; i <= length(v); i++) {
        c = substr(v, i, 1)
        if (c == "\\") out = out "\\\\"
        else if (c == "\t") out = out "\\t"
        else if (c == "\n") out = out "\\n"
        else if (c == "\r") out = out "\\r"
        else out = out c
    }
    return out
}
function unesc(v,   out, i, c, d) {
    if (index(v, "\\") == 0) return v
    out = ""
    for (i = 1; i <= length(v); i++) {
        c = substr(v, i, 1)
        if (c == "\\" && i < length(v)) {
            d = substr(v, ++i, 1)
            if (d == "n") out = out "\n"
            else if (d == "t") out = out "\t"
            else if (d == "r") out = out "\r"
            else if (d == "\\") out = out "\\"
            else out = out "\\" d
        } else out = out c
    }
    return out
}
function trim(s) { sub(/^[ \t\r]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }
'

# The YAML subset of cloud metadata: block mappings and sequences by indentation, "- key: v"
# items, flow sequences and mappings of scalars ([a, b], {a: 1}), plain, single- and
# double-quoted scalars, literal/folded block scalars (| >), comments, document markers.
# Not supported (skipped): anchors/aliases, tags, complex keys, nested flow collections,
# multi-line plain scalars. Indentation must be spaces, as YAML requires.
# Each "- " opens a node one half-level deeper than its column, so "key:" followed by items at
# the same column still nests the items under the key.
# shellcheck disable=SC2016 # an awk program: its $ are awk's
AWK_YAML='
function indent_of(s) { match(s, /^ */); return RLENGTH }
function uncomment(s,   i, c, q, prev) {
    q = ""; prev = " "
    for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (q != "") {
            if (q == "\"" && c == "\\") { i++; prev = "x"; continue }
            if (q == Q && c == Q && substr(s, i + 1, 1) == Q) { i++; continue }
            if (c == q) q = ""
            prev = c; continue
        }
        if ((c == "\"" || c == Q) && index(" \t[{,", prev) > 0) q = c
        else if (c == "#" && (prev == " " || prev == "\t")) return substr(s, 1, i - 1)
        prev = c
    }
    return s
}
function dq(s,   out, i, c, d) {
    out = ""
    for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (c == "\\" && i < length(s)) {
            d = substr(s, ++i, 1)
            if (d == "\"") out = out "\""
            else if (d == "/") out = out "/"
            else if (d == "n" || d == "t" || d == "r" || d == "\\") out = out "\\" d
            else out = out "\\\\" d
        } else if (c == "\t") out = out "\\t"
        else out = out c
    }
    return out
}
function dequote(v,   inner, out, i) {
    v = trim(v)
    if (length(v) >= 2 && substr(v, 1, 1) == Q && substr(v, length(v), 1) == Q) {
        inner = substr(v, 2, length(v) - 2); out = ""
        while ((i = index(inner, Q Q)) > 0) { out = out substr(inner, 1, i); inner = substr(inner, i + 2) }
        return esc(out inner)
    }
    if (length(v) >= 2 && substr(v, 1, 1) == "\"" && substr(v, length(v), 1) == "\"")
        return dq(substr(v, 2, length(v) - 2))
    return esc(v)
}
function join(a, b) { return a == "" ? b : a "/" b }
function pop(lvl) { while (depth > 0 && lev[depth] >= lvl) depth-- }
function push(lvl, p) { depth++; lev[depth] = lvl; pth[depth] = p }
function top() { return depth > 0 ? pth[depth] : "" }
# split "key: value" into K and V; 0 when the text is not a mapping entry
function split_entry(t,   i, j) {
    if (t ~ /^[\[{]/) return 0
    if (substr(t, 1, 1) == "\"" || substr(t, 1, 1) == Q) {
        j = index(substr(t, 2), substr(t, 1, 1))
        if (j == 0) return 0
        i = j + 2
        if (substr(t, i, 1) != ":") return 0
        if (i < length(t) && substr(t, i + 1, 1) != " ") return 0
        K = substr(t, 2, j - 1); V = trim(substr(t, i + 1)); return 1
    }
    i = index(t, ": ")
    if (i == 0) { if (substr(t, length(t), 1) != ":") return 0; i = length(t) }
    K = trim(substr(t, 1, i - 1)); V = trim(substr(t, i + 1))
    return K != ""
}
function flow(body, p, ismap,   i, c, q, item, n, t) {
    n = 0; item = ""; q = ""
    for (i = 1; i <= length(body); i++) {
        c = substr(body, i, 1)
        if (q != "") {
            item = item c
            if (q == "\"" && c == "\\") { item = item substr(body, ++i, 1); continue }
            if (q == Q && c == Q && substr(body, i + 1, 1) == Q) { item = item Q; i++; continue }
            if (c == q) q = ""
            continue
        }
        # a quote opens a quoted scalar only where one can start (item or value start)
        t = trim(item)
        if ((c == "\"" || c == Q) && (t == "" || substr(t, length(t), 1) == ":")) { q = c; item = item c; continue }
        if (c == ",") { flow_item(item, p, ismap, n++); item = ""; continue }
        item = item c
    }
    flow_item(item, p, ismap, n)
}
function flow_item(item, p, ismap, n) {
    item = trim(item)
    if (item == "") return
    if (ismap) { if (split_entry(item)) print join(p, K) "\t" dequote(V) }
    else print join(p, n) "\t" dequote(item)
}
function scalar(p, v, col) {
    if (v ~ /^[|>][-+0-9]*$/) { blk = 1; blkp = p; blkind = col; blkcol = -1; blkfold = (substr(v, 1, 1) == ">"); blkn = 0; return }
    if (v ~ /^&[^ ]+$/) return
    sub(/^&[^ ]+ +/, "", v)
    sub(/^!![a-z]+ +/, "", v)
    if (v ~ /^\*/) return
    if (v ~ /^\[.*\]$/) { flow(substr(v, 2, length(v) - 2), p, 0); return }
    if (v ~ /^\{.*\}$/) { flow(substr(v, 2, length(v) - 2), p, 1); return }
    print p "\t" dequote(v)
}
function end_block(   out, i, last) {
    last = blkn
    while (last > 0 && blkl[last] == "") last--
    out = ""
    for (i = 1; i <= last; i++) out = out (i > 1 ? (blkfold ? " " : "\n") : "") blkl[i]
    print blkp "\t" esc(out)
    blk = 0
}
function node(col, t,   p, rest, c2, lvl) {
    if (t == "-" || substr(t, 1, 2) == "- ") {
        lvl = 2 * col + 1
        pop(lvl)
        p = top()
        p = join(p, cnt[p]++)
        push(lvl, p)
        rest = substr(t, 2)
        c2 = col + 1 + indent_of(rest)
        rest = trim(rest)
        if (rest == "") return
        if (rest == "-" || substr(rest, 1, 2) == "- " || split_entry(rest)) { node(c2, rest); return }
        scalar(p, rest, col)
        return
    }
    if (!split_entry(t)) {
        # a whole document (or a block) written as one flow collection: {a: b} or [a, b]
        if (t ~ /^[\[{]/) { pop(2 * col); scalar(top(), t, col) }
        return
    }
    lvl = 2 * col
    pop(lvl)
    p = join(top(), K)
    if (V == "") { push(lvl, p); return }
    scalar(p, V, col)
}
BEGIN { Q = "\047"; depth = 0; blk = 0 }
{
    line = $0
    sub(/\r$/, "", line)
    if (blk) {
        if (line ~ /^[ \t]*$/) { blkl[++blkn] = ""; next }
        if (indent_of(line) > blkind) {
            if (blkcol < 0) blkcol = indent_of(line)
            blkl[++blkn] = substr(line, blkcol + 1)
            next
        }
        end_block()
    }
    if (line ~ /^(---|\.\.\.)( |$)/ || line ~ /^%/) next
    t = uncomment(line)
    if (t ~ /^[ \t]*$/) next
    col = indent_of(t)
    node(col, trim(t))
}
END { if (blk) end_block() }
'

# JSON by recursive descent. Strings keep their \n \t \r \\ escapes (already the flat format),
# \" and \/ are decoded, \uXXXX is decoded for printable ASCII and kept as written otherwise.
# Exits 1 on malformed input or nesting deeper than 64.
# shellcheck disable=SC2016 # an awk program: its $ are awk's
AWK_JSON='
function ws(   c) {
    while (pos <= n) { c = substr(s, pos, 1); if (c == " " || c == "\t" || c == "\n" || c == "\r") pos++; else break }
}
function hexval(h,   i, v, c) {
    v = 0
    for (i = 1; i <= 4; i++) { c = index("0123456789abcdef", tolower(substr(h, i, 1))); if (c == 0) return -1; v = v * 16 + c - 1 }
    return v
}
function str(   out, c, d, h, v) {
    out = ""; pos++
    while (pos <= n) {
        c = substr(s, pos, 1)
        if (c == "\"") { pos++; return out }
        if (c == "\\") {
            d = substr(s, pos + 1, 1)
            if (d == "\"" || d == "/") out = out d
            else if (d == "n" || d == "t" || d == "r" || d == "\\") out = out "\\" d
            else if (d == "b" || d == "f") out = out
            else if (d == "u") {
                h = substr(s, pos + 2, 4); v = hexval(h)
                if (v < 0) { bad = 1; return "" }
                if (v == 9) out = out "\\t"; else if (v == 10) out = out "\\n"; else if (v == 13) out = out "\\r"
                else if (v == 92) out = out "\\\\"
                else if (v >= 32 && v < 127) out = out sprintf("%c", v)
                else out = out "\\u" h
                pos += 4
            } else { bad = 1; return "" }
            pos += 2; continue
        }
        if (c == "\t") out = out "\\t"; else if (c == "\n") out = out "\\n"; else out = out c
        pos++
    }
    bad = 1; return ""
}
function val(p, d,   c, k, i, lit) {
    if (d > 64) { bad = 1; return }
    ws(); c = substr(s, pos, 1)
    if (c == "{") {
        pos++; ws()
        if (substr(s, pos, 1) == "}") { pos++; return }
        while (!bad) {
            ws(); if (substr(s, pos, 1) != "\"") { bad = 1; return }
            k = str(); ws()
            if (substr(s, pos, 1) != ":") { bad = 1; return }
            pos++; val(p == "" ? k : p "/" k, d + 1); ws()
            c = substr(s, pos++, 1)
            if (c == "}") return
            if (c != ",") { bad = 1; return }
        }
        return
    }
    if (c == "[") {
        pos++; ws()
        if (substr(s, pos, 1) == "]") { pos++; return }
        for (i = 0; !bad; i++) {
            val(p == "" ? i : p "/" i, d + 1); ws()
            c = substr(s, pos++, 1)
            if (c == "]") return
            if (c != ",") { bad = 1; return }
        }
        return
    }
    if (c == "\"") { k = str(); if (!bad) print p "\t" k; return }
    lit = ""
    while (pos <= n && index("{}[],: \t\r\n\"", substr(s, pos, 1)) == 0) { lit = lit substr(s, pos, 1); pos++ }
    if (lit !~ /^(true|false|null|-?[0-9][0-9.eE+-]*)$/) { bad = 1; return }
    print p "\t" lit
}
{ s = s $0 "\n" }
END { n = length(s); pos = 1; bad = 0; val("", 0); ws(); if (bad || pos <= n) exit 1 }
'

# shellcheck disable=SC2016 # an awk program: its $ are awk's
AWK_FLAT='
BEGIN { FS = "\t"; pp = (p == "" ? "" : p "/") }
{ v = substr($0, length($1) + 2) }
mode == "get" && $1 == p { print unesc(v); exit }
mode == "list" && substr($1, 1, length(pp)) == pp && substr($1, length(pp) + 1) ~ /^[0-9]+$/ { print unesc(v) }
mode == "under" && ($1 == p || substr($1, 1, length(pp)) == pp) { print unesc(v) }
mode == "keys" && substr($1, 1, length(pp)) == pp {
    k = substr($1, length(pp) + 1); sub(/\/.*/, "", k)
    if (k != "" && !(k in seen)) { seen[k] = 1; print k }
}
'

flatten_yaml() {
    parseable "$1" || return 1
    awk "$AWK_COMMON$AWK_YAML" "$1"
}

flatten_json() {
    parseable "$1" || return 1
    if have jq; then
        jq -r 'paths(type != "object" and type != "array") as $p
               | [($p | map(tostring) | join("/")), (getpath($p) | tostring)] | @tsv' "$1" 2>/dev/null && return 0
    fi
    awk "$AWK_COMMON$AWK_JSON" "$1"
}

# flat_get FLAT PATH: the value at PATH (decoded); flat_list FLAT PATH: the items of the list at
# PATH; flat_under FLAT PATH: every value at or below PATH; flat_keys FLAT PATH: child names.
flat_get() { awk -v mode=get -v p="$2" "$AWK_COMMON$AWK_FLAT" "$1" 2>/dev/null; }
flat_list() { awk -v mode=list -v p="$2" "$AWK_COMMON$AWK_FLAT" "$1" 2>/dev/null; }
flat_under() { awk -v mode=under -v p="$2" "$AWK_COMMON$AWK_FLAT" "$1" 2>/dev/null; }
flat_keys() { awk -v mode=keys -v p="$2" "$AWK_COMMON$AWK_FLAT" "$1" 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# Finding and mounting context media
# ---------------------------------------------------------------------------------------------

# Volume label read straight from the bytes: "iso9660 LABEL" or "vfat LABEL" (nothing when the
# device holds neither). The last resort when neither blkid nor findfs can tell (busybox's
# blkid applet is often left out of static builds).
#   ISO 9660: primary volume descriptor at byte 32768 = type 1 + "CD001"; volume id at +40 (32).
#   FAT: boot sector; FAT32 says "FAT32" at 82 and keeps its label at 71 (11 bytes), FAT12/16
#   say "FAT" at 54 and keep it at 43. "NO NAME" means no label.
raw_label() {
    _rl_dev=$1
    [ -r "$_rl_dev" ] || return 1
    if [ "$(dd if="$_rl_dev" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ]; then
        _rl_l=$(dd if="$_rl_dev" bs=1 skip=32808 count=32 2>/dev/null | tr -d '\000')
        printf 'iso9660 %s\n' "$(trim "$_rl_l")"
        return 0
    fi
    _rl_off=
    if [ "$(dd if="$_rl_dev" bs=1 skip=82 count=5 2>/dev/null)" = FAT32 ]; then
        _rl_off=71
    elif [ "$(dd if="$_rl_dev" bs=1 skip=54 count=3 2>/dev/null)" = FAT ]; then
        _rl_off=43
    fi
    [ -n "$_rl_off" ] || return 1
    _rl_l=$(trim "$(dd if="$_rl_dev" bs=1 skip=$_rl_off count=11 2>/dev/null | tr -d '\000')")
    [ "$_rl_l" = "NO NAME" ] && _rl_l=
    printf 'vfat %s\n' "$_rl_l"
}

# Block devices worth probing: every name in /proc/partitions, plus CD-ROM nodes (an empty or
# just-attached drive is not always listed there).
candidate_devices() {
    awk 'NR > 2 && $4 != "" { print $4 }' "$R/proc/partitions" 2>/dev/null
    for _cd_node in "$R"/dev/sr[0-9]* "$R"/dev/cdrom*; do
        [ -e "$_cd_node" ] && printf '%s\n' "${_cd_node##*/}"
    done
}

# Device node of the filesystem labelled exactly $1, or nothing. util-linux blkid, then findfs
# (busybox and util-linux), then udev's by-label links, then busybox blkid's listing, then the
# raw reader. util-linux blkid answering "no such label" (status 2, after probing every device
# without its cache) is believed: the slower fallbacks would probe the same devices again.
# In dry-run only what lies under the root is looked at.
find_label() {
    _fl_label=$1
    _fl_dev=
    if [ "$DRYRUN" != 1 ]; then
        if have blkid; then
            _fl_dev=$(blkid -c /dev/null -t "LABEL=$_fl_label" -o device 2>/dev/null)
            _fl_rc=$?
            _fl_dev=$(printf '%s\n' "$_fl_dev" | head -n 1)
            [ "$_fl_rc" = 2 ] && [ -z "$_fl_dev" ] && return 1
        fi
        if [ -z "$_fl_dev" ] && have findfs; then
            _fl_dev=$(findfs "LABEL=$_fl_label" 2>/dev/null | head -n 1)
        fi
    fi
    if [ -z "$_fl_dev" ] && [ -e "$R/dev/disk/by-label/$_fl_label" ]; then
        _fl_dev=$R/dev/disk/by-label/$_fl_label
    fi
    if [ -z "$_fl_dev" ] && [ "$DRYRUN" != 1 ] && have blkid; then
        _fl_dev=$(blkid 2>/dev/null | awk -v want="LABEL=\"$_fl_label\"" '
            { for (i = 2; i <= NF; i++) if ($i == want) { sub(/:$/, "", $1); print $1; exit } }')
    fi
    if [ -z "$_fl_dev" ]; then
        for _fl_name in $(candidate_devices); do
            case $_fl_name in *[!A-Za-z0-9_-]*) continue ;; esac
            _fl_info=$(raw_label "$R/dev/$_fl_name" 2>/dev/null) || continue
            if [ "${_fl_info#* }" = "$_fl_label" ]; then
                _fl_dev=$R/dev/$_fl_name
                break
            fi
        done
    fi
    [ -n "$_fl_dev" ] && printf '%s\n' "$_fl_dev"
}

MODULES_LOADED=0
load_media_modules() {
    [ "$MODULES_LOADED" = 1 ] && return 0
    MODULES_LOADED=1
    have modprobe || return 0
    for _lm in sr_mod cdrom isofs vfat nls_cp437 nls_iso8859-1 nls_utf8 nls_ascii; do
        if [ "$DRYRUN" = 1 ]; then
            log "dry-run: modprobe -q $_lm"
        else
            modprobe -q "$_lm" >/dev/null 2>&1
        fi
    done
}

# Mount DEVICE read-only on a private directory (or reuse the place it is already mounted at)
# and set MEDIUM_DIR.
mount_medium() {
    _mm_dev=$1
    _mm_real=$_mm_dev
    if have readlink; then
        _mm_real=$(readlink -f "$_mm_dev" 2>/dev/null) || _mm_real=$_mm_dev
    fi
    _mm_at=$(awk -v a="$_mm_dev" -v b="$_mm_real" '$1 == a || $1 == b { print $2; exit }' "$R/proc/mounts" 2>/dev/null)
    if [ -n "$_mm_at" ]; then
        # /proc/mounts writes blanks in mount points as octal escapes
        _mm_at=$(printf '%s' "$_mm_at" | sed 's/\\040/ /g')
        MEDIUM_DIR=$R$_mm_at
        MEDIUM_MOUNTED=0
        log "$_mm_dev is already mounted on $_mm_at; reading it there"
        return 0
    fi
    _mm_dir=$WORK/medium
    mkdir -p "$_mm_dir" && chmod 700 "$_mm_dir"
    for _mm_try in first modules; do
        [ "$_mm_try" = modules ] && load_media_modules
        for _mm_type in iso9660 vfat auto; do
            if [ "$DRYRUN" = 1 ]; then
                log "dry-run: mount -r -t $_mm_type $_mm_dev $_mm_dir"
                return 1
            fi
            if mount -r -t "$_mm_type" "$_mm_dev" "$_mm_dir" >/dev/null 2>&1; then
                MEDIUM_DIR=$_mm_dir
                MEDIUM_MOUNTED=1
                log "mounted $_mm_dev ($_mm_type) read-only"
                return 0
            fi
        done
    done
    log "could not mount $_mm_dev (tried iso9660, vfat, auto)"
    return 1
}

release_medium() {
    if [ "$MEDIUM_MOUNTED" = 1 ]; then
        if umount "$WORK/medium" >/dev/null 2>&1 || umount -l "$WORK/medium" >/dev/null 2>&1; then
            MEDIUM_MOUNTED=0
        else
            log "could not unmount the medium from $WORK/medium"
        fi
    fi
    MEDIUM_DIR=
}

# Guess what kind of medium a directory holds (for IMAGEWRIGHT_AGENT_MEDIA_DIR without a kind).
media_kind_of() {
    if [ -d "$1/openstack" ]; then
        echo configdrive
    elif [ -f "$1/meta-data" ]; then
        echo nocloud
    elif [ -f "$1/context.sh" ]; then
        echo opennebula
    elif [ -d "$1/meta-data" ]; then
        echo wakame
    fi
}

# media KIND LABEL...: make the medium of KIND available at MEDIUM_DIR.
media() {
    _me_kind=$1
    shift
    if [ -n "${IMAGEWRIGHT_AGENT_MEDIA_DIR:-}" ]; then
        _me_have=${IMAGEWRIGHT_AGENT_MEDIA_KIND:-}
        [ -n "$_me_have" ] || _me_have=$(media_kind_of "$IMAGEWRIGHT_AGENT_MEDIA_DIR")
        [ "$_me_have" = "$_me_kind" ] || return 1
        MEDIUM_DIR=$IMAGEWRIGHT_AGENT_MEDIA_DIR
        MEDIUM_MOUNTED=0
        log "using the $_me_kind medium given at $MEDIUM_DIR"
        return 0
    fi
    if [ "$DRYRUN" != 1 ] && [ ! -e "$R/dev/sr0" ] && have modprobe; then
        modprobe -q sr_mod >/dev/null 2>&1
    fi
    for _me_label in "$@"; do
        _me_dev=$(find_label "$_me_label")
        if [ -n "$_me_dev" ]; then
            log "found a $_me_kind medium: $_me_dev (label $_me_label)"
            mount_medium "$_me_dev"
            return
        fi
    done
    return 1
}

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

# ---------------------------------------------------------------------------------------------
# Source: EC2 instance metadata service
# ---------------------------------------------------------------------------------------------

IMDS_HOST=
IMDS_PORT=80
IMDS_TOKEN=
HTTP_CODE=000

# http_request METHOD PATH OUTFILE [HEADER]: sets HTTP_CODE (000 when nothing answered) and
# HTTP_NO_CONNECT (1 when not even a connection was made), returns 0 on 200. curl when
# present; else wget for GETs (busybox wget cannot PUT, and its -T crashes in 1.35: timeout(1)
# bounds it); else a raw HTTP/1.0 exchange through nc. Every wait is a few seconds at most.
http_request() {
    _hr_method=$1
    _hr_path=$2
    _hr_out=$3
    _hr_hdr=${4:-}
    HTTP_CODE=000
    HTTP_NO_CONNECT=0
    : >"$_hr_out"
    if have curl; then
        if [ -n "$_hr_hdr" ]; then
            HTTP_CODE=$(curl -s -o "$_hr_out" -w '%{http_code}' --connect-timeout 2 -m 4 \
                -X "$_hr_method" -H "$_hr_hdr" "$IMDS_BASE$_hr_path" 2>/dev/null)
        else
            HTTP_CODE=$(curl -s -o "$_hr_out" -w '%{http_code}' --connect-timeout 2 -m 4 \
                -X "$_hr_method" "$IMDS_BASE$_hr_path" 2>/dev/null)
        fi
        # curl 6: no such host, 7: refused or unreachable, 28: timed out
        case $? in 6 | 7 | 28) HTTP_NO_CONNECT=1 ;; esac
        [ -n "$HTTP_CODE" ] || HTTP_CODE=000
    elif [ "$_hr_method" = GET ] && have wget; then
        # -S prints the status lines (busybox and GNU wget alike), which is how the code is seen
        if [ -n "$_hr_hdr" ]; then
            with_timeout 3 wget -S -O "$_hr_out" --header "$_hr_hdr" "$IMDS_BASE$_hr_path" >"$WORK/wget.err" 2>&1
        else
            with_timeout 3 wget -S -O "$_hr_out" "$IMDS_BASE$_hr_path" >"$WORK/wget.err" 2>&1
        fi
        HTTP_CODE=$(sed -n 's/.*HTTP\/1\.[01] \([0-9][0-9][0-9]\).*/\1/p' "$WORK/wget.err" | tail -n 1)
        if [ -z "$HTTP_CODE" ]; then
            HTTP_CODE=000
            HTTP_NO_CONNECT=1
        fi
    elif have nc; then
        _hr_hostline=$IMDS_HOST
        [ "$IMDS_PORT" = 80 ] || _hr_hostline=$IMDS_HOST:$IMDS_PORT
        {
            printf '%s %s HTTP/1.0\r\nHost: %s\r\n' "$_hr_method" "$_hr_path" "$_hr_hostline"
            [ -n "$_hr_hdr" ] && printf '%s\r\n' "$_hr_hdr"
            [ "$_hr_method" = PUT ] && printf 'Content-Length: 0\r\n'
            printf '\r\n'
        } | with_timeout 4 nc -w 2 "$IMDS_HOST" "$IMDS_PORT" >"$WORK/http.raw" 2>/dev/null
        # nc fails when it cannot connect; a server that closes without a word leaves it at 0
        _hr_nc=$?
        HTTP_CODE=$(head -n 1 "$WORK/http.raw" | tr -d '\r' | awk '$1 ~ /^HTTP\// { print $2 }')
        [ -n "$HTTP_CODE" ] || HTTP_CODE=000
        [ "$_hr_nc" != 0 ] && [ ! -s "$WORK/http.raw" ] && HTTP_NO_CONNECT=1
        # the body starts after the first empty line; count header bytes to cut it binary-safe
        _hr_hlen=$(awk '{ n += length($0) + 1 } /^\r?$/ { print n; found = 1; exit } END { if (!found) print 0 }' "$WORK/http.raw")
        if [ "${_hr_hlen:-0}" -gt 0 ]; then
            tail -c +"$((_hr_hlen + 1))" "$WORK/http.raw" >"$_hr_out"
        fi
    else
        log "neither curl, wget nor nc is installed: cannot reach the metadata service"
    fi
    [ "$HTTP_CODE" = 200 ]
}

imds_get() {  # PATH OUTFILE
    if [ -n "$IMDS_TOKEN" ]; then
        http_request GET "$1" "$2" "X-aws-ec2-metadata-token: $IMDS_TOKEN"
    else
        http_request GET "$1" "$2"
    fi
}

# IMDSv2: PUT /latest/api/token with a TTL. 404/403/405, no answer, or any other refusal means
# IMDSv1 (botocore's rule); a service that requires tokens then answers GETs with 401.
imds_get_token() {
    IMDS_TOKEN=
    if http_request PUT /latest/api/token "$WORK/ec2.token" "X-aws-ec2-metadata-token-ttl-seconds: 21600"; then
        _it=$(head -c 1024 "$WORK/ec2.token" | tr -d '\r\n')
        case $_it in
            '' | *[!A-Za-z0-9+/=_.-]*) log "IMDSv2 answered with an unusable token; using IMDSv1" ;;
            *)
                IMDS_TOKEN=$_it
                log "IMDSv2 session token obtained"
                ;;
        esac
    else
        case $HTTP_CODE in
            404 | 403 | 405) log "IMDSv2 not offered (HTTP $HTTP_CODE to the token request); using IMDSv1" ;;
            000)
                if [ "$HTTP_NO_CONNECT" = 1 ]; then
                    log "no connection to $IMDS_BASE for an IMDSv2 token; trying IMDSv1"
                else
                    log "no answer to the IMDSv2 token request; trying IMDSv1"
                fi
                ;;
            *) log "IMDSv2 token request refused (HTTP $HTTP_CODE); trying IMDSv1" ;;
        esac
    fi
}

source_ec2() {
    case $IMDS_BASE in
        http://*) ;;
        *)
            log "metadata service URL $IMDS_BASE is not http://; skipped"
            return 1
            ;;
    esac
    IMDS_BASE=${IMDS_BASE%/}
    _ec_hp=${IMDS_BASE#http://}
    _ec_hp=${_ec_hp%%/*}
    IMDS_HOST=${_ec_hp%%:*}
    IMDS_PORT=80
    case $_ec_hp in *:*) IMDS_PORT=${_ec_hp##*:} ;; esac
    if ! network_for_metadata && [ "$DRYRUN" != 1 ]; then
        log "no network: the EC2 metadata service cannot be reached"
        return 1
    fi
    imds_get_token
    _ec_unreachable=$HTTP_NO_CONNECT
    _ec_try=1
    while ! imds_get /latest/meta-data/instance-id "$WORK/ec2.id"; do
        case $HTTP_CODE in
            401)
                log "the metadata service requires an IMDSv2 token and none could be obtained"
                return 1
                ;;
            000 | 5*) ;;
            *)
                log "metadata service at $IMDS_BASE: HTTP $HTTP_CODE for meta-data/instance-id"
                return 1
                ;;
        esac
        # nothing listens at all (twice): do not keep the boot waiting
        [ "$HTTP_NO_CONNECT" = 1 ] && [ "$_ec_unreachable" = 1 ] && _ec_try=3
        if [ "$_ec_try" -ge 3 ]; then
            log "no EC2 metadata service at $IMDS_BASE"
            return 1
        fi
        _ec_try=$((_ec_try + 1))
        sleep 1
    done
    CTX_ID=$(first_line "$WORK/ec2.id")
    if imds_get /latest/meta-data/local-hostname "$WORK/ec2.hn" || imds_get /latest/meta-data/hostname "$WORK/ec2.hn"; then
        CTX_HOST=$(first_line "$WORK/ec2.hn")
    fi
    # public-keys/ lists "N=name" lines; each key lives at public-keys/N/openssh-key
    if imds_get /latest/meta-data/public-keys/ "$WORK/ec2.keys"; then
        for _ec_k in $(sed -n 's/^\([0-9][0-9]*\)=.*/\1/p' "$WORK/ec2.keys" | head -n 64); do
            if imds_get "/latest/meta-data/public-keys/$_ec_k/openssh-key" "$WORK/ec2.key"; then
                add_keys <"$WORK/ec2.key"
            fi
        done
    fi
    if imds_get /latest/user-data "$WORK/ec2.ud"; then
        take_user_data "$WORK/ec2.ud"
    fi
    return 0
}

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

write_udhcpc_script() {
    cat >"$WORK/udhcpc.script" <<'EOF'
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
    chmod 700 "$WORK/udhcpc.script"
}

# DHCP on one interface with whichever client exists; 0 once it has an address.
dhcp_iface() {
    _dh_if=$1
    live ip link set dev "$_dh_if" up >/dev/null 2>&1 || true
    if have udhcpc; then
        write_udhcpc_script
        live_timeout 30 udhcpc -i "$_dh_if" -n -q -t 4 -T 2 -s "$WORK/udhcpc.script" && return 0
    fi
    if have dhclient; then
        live_timeout 30 dhclient -1 "$_dh_if" && return 0
    fi
    if have dhcpcd; then
        live_timeout 30 dhcpcd -1 -t 20 "$_dh_if" && return 0
    fi
    if have networkctl && [ -d "$R/run/systemd/netif" ]; then
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

have_dhcp_client() {
    have udhcpc || have dhclient || have dhcpcd || { have networkctl && [ -d "$R/run/systemd/netif" ]; }
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
        log "no DHCP client (udhcpc, dhclient, dhcpcd, networkctl) is installed"
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
    replace_file "$R/etc/hosts" "$WORK/hosts.new" 644 && log "hostname: updated /etc/hosts"
    return 0
}

# once per instance: /etc/hostname and /etc/hosts (the running name follows in sync_hostname)
apply_hostname() {
    _ah_fqdn=
    _ah_short=${HOST_APPLIED%%.*}
    case $HOST_APPLIED in *.*) _ah_fqdn=$HOST_APPLIED ;; esac
    printf '%s\n' "$_ah_short" >"$WORK/hostname.new"
    if replace_file "$R/etc/hostname" "$WORK/hostname.new" 644; then
        log "hostname: /etc/hostname set to $_ah_short"
    fi
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
    mkdir -p "$_ak_dir" && chmod 700 "$_ak_dir"
    [ -f "$_ak_file" ] || : >"$_ak_file"
    # a file without a final newline would glue our first key to its last line
    if [ -s "$_ak_file" ] && [ -n "$(tail -c 1 "$_ak_file")" ]; then
        echo >>"$_ak_file"
    fi
    _ak_added=0
    while IFS= read -r _ak_key; do
        [ -n "$_ak_key" ] || continue
        if ! grep -qxF -- "$_ak_key" "$_ak_file"; then
            printf '%s\n' "$_ak_key" >>"$_ak_file"
            _ak_added=$((_ak_added + 1))
        fi
    done <"$WORK/ctx/keys"
    chmod 600 "$_ak_file"
    chown "$_ak_uid:$_ak_gid" "$_ak_dir" "$_ak_file" 2>/dev/null || log "ssh: could not chown $_ak_home/.ssh to $_ak_uid:$_ak_gid"
    if [ -z "$R" ] && have restorecon; then
        restorecon -R "$_ak_dir" >/dev/null 2>&1
    fi
    log "ssh: $_ak_added key(s) added to $_ak_home/.ssh/authorized_keys of $_ak_user"
}

# HOST_KEYS per-instance and a new instance: set the old keys aside, generate, and put them back
# if nothing could be generated. Otherwise only missing keys are generated.
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
        if [ -d "$WORK/old-host-keys" ] && ! ls "$R"/etc/ssh/ssh_host_*_key >/dev/null 2>&1; then
            log "ssh: no host key could be generated; the previous keys are kept"
            mv "$WORK/old-host-keys"/* "$R/etc/ssh/" 2>/dev/null
        fi
        rm -rf "$WORK/old-host-keys"
    elif have dropbearkey; then
        mkdir -p "$R/etc/dropbear"
        for _hk_t in rsa ecdsa ed25519; do
            _hk_f=$R/etc/dropbear/dropbear_${_hk_t}_host_key
            [ "$_hk_regen" = 1 ] && rm -f "$_hk_f"
            [ -s "$_hk_f" ] || run_logged dropbearkey -t "$_hk_t" -f "$_hk_f" || log "ssh: dropbearkey could not make a $_hk_t key"
        done
    else
        log "ssh: neither ssh-keygen nor dropbearkey is installed; host keys not generated"
    fi
}

# ---------------------------------------------------------------------------------------------
# Growing the root partition and filesystem
# ---------------------------------------------------------------------------------------------

# The kernel's view of the root filesystem: major:minor, type and source from mountinfo
# (the last "/" line wins: it is the one on top).
root_mount() {
    awk '$5 == "/" { for (i = 7; i <= NF; i++) if ($i == "-") break; mm = $3; t = $(i + 1); src = $(i + 2) }
         END { if (mm != "") print mm, t, src }' "$R/proc/self/mountinfo" 2>/dev/null
}

# resize the filesystem mounted on / (lives on DEVICE) to fill its partition
resize_root_fs() {
    _rz_type=$1
    _rz_dev=$2
    case $_rz_type in
        ext2 | ext3 | ext4)
            if have resize2fs; then
                log "grow: resizing the $_rz_type filesystem on $_rz_dev"
                live resize2fs "$_rz_dev" || log "grow: resize2fs failed"
            else
                log "grow: resize2fs is not installed; filesystem not resized"
            fi
            ;;
        xfs)
            if have xfs_growfs; then
                live xfs_growfs "$R/" || log "grow: xfs_growfs failed"
            else
                log "grow: xfs_growfs is not installed; filesystem not resized"
            fi
            ;;
        btrfs)
            if have btrfs; then
                live btrfs filesystem resize max "$R/" || log "grow: btrfs resize failed"
            else
                log "grow: btrfs is not installed; filesystem not resized"
            fi
            ;;
        *) log "grow: cannot resize a $_rz_type root filesystem" ;;
    esac
}

# Make the running kernel use the partition's new size. BLKRRPART (blockdev --rereadpt,
# partprobe) is refused while a partition of the disk is mounted; BLKPG_RESIZE_PARTITION, which
# `partx --update --nr N` and `resizepart` issue, changes one partition and works while it is
# mounted (Linux >= 3.6). growpart itself calls partx.
tell_kernel() {
    _tk_disk=$1
    _tk_n=$2
    if have partx; then
        live partx --update --nr "$_tk_n" "$_tk_disk" && return 0
    fi
    if have resizepart; then
        _tk_size=$(sfdisk -d "$_tk_disk" 2>/dev/null | awk -v n="$_tk_n" '
            { dev = $1; sub(/^.*[^0-9]/, "", dev) }
            dev == n { for (i = 1; i <= NF; i++) if ($i ~ /^size=/) { s = $(i + 1); if ($i != "size=") s = substr($i, 6); gsub(/[^0-9]/, "", s); print s; exit } }')
        if [ -n "$_tk_size" ]; then
            live resizepart "$_tk_disk" "$_tk_n" "$_tk_size" && return 0
        fi
    fi
    log "grow: neither partx nor resizepart could update the running kernel; the new size is seen after the next reboot, and the filesystem grows then"
    return 1
}

grow_root() {
    if [ "$CONF_GROW_ROOT" != yes ]; then
        log "grow: disabled in agent.conf"
        return 0
    fi
    _gr=$(root_mount)
    if [ -z "$_gr" ]; then
        log "grow: the root filesystem is not in /proc/self/mountinfo; skipped"
        return 0
    fi
    # shellcheck disable=SC2086 # three words: major:minor, type, source
    set -- $_gr
    _gr_mm=$1
    _gr_type=$2
    _gr_sys=$R/sys/dev/block/$_gr_mm
    if [ ! -d "$_gr_sys" ]; then
        log "grow: the root filesystem ($_gr_type on $3) is not on a block device; skipped"
        return 0
    fi
    _gr_sys=$(cd -P "$_gr_sys" && pwd)
    _gr_name=${_gr_sys##*/}
    _gr_dev=$R/dev/$_gr_name
    if [ "$DRYRUN" != 1 ] && [ ! -b "$_gr_dev" ] && [ -z "$R" ]; then
        # no node under /dev (e.g. /dev/root only): make one
        mknod "$WORK/rootdev" b "${_gr_mm%%:*}" "${_gr_mm##*:}" 2>/dev/null && _gr_dev=$WORK/rootdev
    fi
    if [ ! -f "$_gr_sys/partition" ]; then
        log "grow: / is on $_gr_name, not on a partition; only the filesystem is resized"
        resize_root_fs "$_gr_type" "$_gr_dev"
        return 0
    fi
    _gr_part=$(cat "$_gr_sys/partition")
    _gr_disksys=${_gr_sys%/*}
    _gr_disk=${_gr_disksys##*/}
    _gr_diskdev=$R/dev/$_gr_disk
    _gr_start=$(cat "$_gr_sys/start")
    _gr_size=$(cat "$_gr_sys/size")
    _gr_total=$(cat "$_gr_disksys/size")
    # only the last partition on the disk can grow into the free space behind it
    for _gr_p in "$_gr_disksys"/*/partition; do
        [ -f "$_gr_p" ] || continue
        _gr_other=$(cat "${_gr_p%/partition}/start" 2>/dev/null)
        if [ "${_gr_other:-0}" -gt "$_gr_start" ]; then
            log "grow: $_gr_name is not the last partition of $_gr_disk; only the filesystem is resized"
            resize_root_fs "$_gr_type" "$_gr_dev"
            return 0
        fi
    done
    # sizes in 512-byte sectors; GPT keeps 33 sectors at the end, and below 1 MiB it is not worth it
    _gr_free=$((_gr_total - _gr_start - _gr_size))
    if [ "$_gr_free" -le 2081 ]; then
        log "grow: $_gr_name already fills $_gr_disk"
        resize_root_fs "$_gr_type" "$_gr_dev"
        return 0
    fi
    log "grow: $_gr_disk has $((_gr_free / 2048)) MiB free behind partition $_gr_part"
    if have growpart; then
        live growpart "$_gr_diskdev" "$_gr_part" || log "grow: growpart failed"
    elif have sfdisk; then
        _gr_label=$(sfdisk -d "$_gr_diskdev" 2>/dev/null | sed -n 's/^label: *//p')
        if [ "$_gr_label" = dos ] && [ "$_gr_part" -gt 4 ]; then
            log "grow: $_gr_name is a logical partition; growing it is not supported"
            resize_root_fs "$_gr_type" "$_gr_dev"
            return 0
        fi
        # ",+" keeps the start and takes all the space after it. --no-reread skips the
        # "device in use" check (it is: / is on it); --no-tell-kernel skips BLKRRPART, which
        # would fail for the same reason — tell_kernel does the per-partition update.
        if live_input ',+' sfdisk --no-reread --no-tell-kernel -N "$_gr_part" "$_gr_diskdev"; then
            tell_kernel "$_gr_diskdev" "$_gr_part"
        else
            log "grow: sfdisk could not grow partition $_gr_part"
        fi
    else
        log "grow: neither growpart nor sfdisk is installed; partition not grown"
    fi
    resize_root_fs "$_gr_type" "$_gr_dev"
}

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

# ---------------------------------------------------------------------------------------------
# Setup, lock, cleanup, main
# ---------------------------------------------------------------------------------------------

load_config() {
    CONF_DEFAULT_USER=root
    CONF_SOURCES=" configdrive nocloud opennebula wakame ec2"
    CONF_GROW_ROOT=yes
    CONF_HOST_KEYS=per-instance
    CONF_DHCP=yes
    _lc_file=$R/etc/imagewright/agent.conf
    [ -r "$_lc_file" ] || return 0
    while IFS= read -r _lc_line || [ -n "$_lc_line" ]; do
        _lc_line=$(trim "$_lc_line")
        case $_lc_line in '' | '#'*) continue ;; *=*) ;; *) continue ;; esac
        _lc_key=$(trim "${_lc_line%%=*}")
        _lc_val=$(trim "${_lc_line#*=}")
        case $_lc_val in
            \"*\") _lc_val=${_lc_val#\"} _lc_val=${_lc_val%\"} ;;
            \'*\') _lc_val=${_lc_val#\'} _lc_val=${_lc_val%\'} ;;
        esac
        case $_lc_key in
            DEFAULT_USER)
                case $_lc_val in
                    [a-z_]*[!a-z0-9_-]* | [!a-z_]* | '') log "agent.conf: DEFAULT_USER '$_lc_val' is not a user name; ignored" ;;
                    *) CONF_DEFAULT_USER=$_lc_val ;;
                esac
                ;;
            SOURCES)
                CONF_SOURCES=
                for _lc_s in $(printf '%s' "$_lc_val" | tr ',' ' '); do
                    case $_lc_s in
                        configdrive | nocloud | opennebula | wakame | ec2) CONF_SOURCES="$CONF_SOURCES $_lc_s" ;;
                        *) log "agent.conf: unknown source '$_lc_s' ignored" ;;
                    esac
                done
                ;;
            GROW_ROOT) case $_lc_val in no | false | 0) CONF_GROW_ROOT=no ;; *) CONF_GROW_ROOT=yes ;; esac ;;
            HOST_KEYS) case $_lc_val in missing) CONF_HOST_KEYS=missing ;; *) CONF_HOST_KEYS=per-instance ;; esac ;;
            DHCP) case $_lc_val in no | false | 0) CONF_DHCP=no ;; *) CONF_DHCP=yes ;; esac ;;
            *) log "agent.conf: unknown setting '$_lc_key' ignored" ;;
        esac
    done <"$_lc_file"
}

make_workdir() {
    for _mw_base in "$R/run" "${TMPDIR:-$R/tmp}" "$R/tmp"; do
        if [ ! -d "$_mw_base" ] || [ ! -w "$_mw_base" ]; then
            continue
        fi
        if have mktemp; then
            WORK=$(mktemp -d "$_mw_base/imagewright-agent.XXXXXX" 2>/dev/null) && return 0
        fi
        WORK=$_mw_base/imagewright-agent.$$
        (umask 077 && mkdir "$WORK") 2>/dev/null && return 0
    done
    WORK=
    return 1
}

cleanup() {
    release_medium
    if [ -n "$WORK" ] && [ -d "$WORK" ] && [ "$MEDIUM_MOUNTED" != 1 ]; then
        rm -rf "$WORK"
    fi
    [ "${LOCK_HELD:-0}" = 1 ] && rm -rf "$LOCK_DIR"
    LOCK_HELD=0
}

acquire_lock() {
    mkdir -p "${LOCK_DIR%/*}" 2>/dev/null
    if mkdir "$LOCK_DIR" 2>/dev/null; then
        echo $$ >"$LOCK_DIR/pid"
        LOCK_HELD=1
        return 0
    fi
    _al_pid=$(cat "$LOCK_DIR/pid" 2>/dev/null)
    if [ -n "$_al_pid" ] && kill -0 "$_al_pid" 2>/dev/null; then
        return 1
    fi
    # a lock left by a run that died (the machine crashed, say)
    rm -rf "$LOCK_DIR"
    mkdir "$LOCK_DIR" 2>/dev/null || return 1
    echo $$ >"$LOCK_DIR/pid"
    LOCK_HELD=1
}

find_source() {
    SOURCE=none
    for _fs in $CONF_SOURCES; do
        reset_context
        if "source_$_fs"; then
            SOURCE=$_fs
            return 0
        fi
        release_medium
    done
    reset_context
    return 1
}

main() {
    umask 022
    mkdir -p "${LOG_FILE%/*}" 2>/dev/null || LOG_FILE=
    load_config
    if ! make_workdir; then
        log "no writable /run or /tmp; nothing can be done"
        log "ready instance-id=none hostname=$(live_hostname) source=none"
        return 0
    fi
    trap cleanup EXIT
    trap 'cleanup; exit 0' INT TERM HUP
    if ! acquire_lock; then
        log "another imagewright-agent is running; this one stops"
        return 0
    fi
    _m_mode=
    [ "$DRYRUN" = 1 ] && _m_mode=" dry-run"
    log "starting (sources:$CONF_SOURCES)${R:+ root=$R}$_m_mode"

    find_source
    log "source: $SOURCE"

    INSTANCE_ID=
    INSTANCE_STATE=
    HOST_APPLIED=
    if [ "$SOURCE" != none ]; then
        INSTANCE_ID=$(clean_instance_id "$CTX_ID")
        if [ -z "$INSTANCE_ID" ]; then
            INSTANCE_ID=$SOURCE-$(cat "$WORK/ctx/keys" "$WORK/ctx/net" | digest_of /dev/stdin 2>/dev/null)
            INSTANCE_ID=$(clean_instance_id "$INSTANCE_ID")
            log "the source names no instance-id; using $INSTANCE_ID"
        fi
        [ "$INSTANCE_ID" = "$(clean_instance_id "$CTX_ID")" ] || [ -z "$CTX_ID" ] ||
            log "instance-id '$CTX_ID' written as $INSTANCE_ID"
        INSTANCE_STATE=$STATE/$INSTANCE_ID
        mkdir -p "$INSTANCE_STATE" && chmod 700 "$STATE" "$INSTANCE_STATE"
        _m_last=$(first_line "$STATE/.last-instance-id")
        if [ -e "$INSTANCE_STATE/done.instance" ]; then
            log "instance $INSTANCE_ID: known; per-instance steps were done before"
        elif [ -n "$_m_last" ]; then
            log "instance $INSTANCE_ID: new (previous instance: $_m_last)"
        else
            log "instance $INSTANCE_ID: first boot"
        fi
        if [ -n "$CTX_HOST" ]; then
            HOST_APPLIED=$(clean_hostname "$CTX_HOST")
            [ -n "$HOST_APPLIED" ] || log "hostname '$CTX_HOST' is not usable; ignored"
        fi
    fi

    # once per instance
    if [ -n "$INSTANCE_STATE" ]; then
        if [ -n "$HOST_APPLIED" ] && [ ! -e "$INSTANCE_STATE/done.hostname" ]; then
            apply_hostname
            : >"$INSTANCE_STATE/done.hostname"
        fi
        if [ ! -e "$INSTANCE_STATE/done.ssh-keys" ]; then
            apply_ssh_keys
            : >"$INSTANCE_STATE/done.ssh-keys"
        fi
    fi
    sync_hostname

    # every boot
    apply_network
    apply_extra_hosts
    if [ -n "$INSTANCE_STATE" ] && [ "$CONF_HOST_KEYS" = per-instance ] && [ ! -e "$INSTANCE_STATE/done.host-keys" ]; then
        apply_host_keys 1
        : >"$INSTANCE_STATE/done.host-keys"
    else
        apply_host_keys 0
    fi
    grow_root

    # once per instance, last: scripts see the machine configured
    if [ -n "$INSTANCE_STATE" ]; then
        [ -e "$INSTANCE_STATE/done.init-script" ] || run_init_scripts
        [ -e "$INSTANCE_STATE/done.user-data" ] || run_user_data
        # written only when they change: a second boot of the same instance changes no file
        [ "$(first_line "$INSTANCE_STATE/source")" = "$SOURCE" ] || echo "$SOURCE" >"$INSTANCE_STATE/source"
        [ -e "$INSTANCE_STATE/done.instance" ] || : >"$INSTANCE_STATE/done.instance"
        [ "$_m_last" = "$INSTANCE_ID" ] || printf '%s\n' "$INSTANCE_ID" >"$STATE/.last-instance-id"
    fi

    _m_host=${HOST_APPLIED%%.*}
    [ -n "$_m_host" ] || _m_host=$(first_line "$R/etc/hostname")
    [ -n "$_m_host" ] || _m_host=$(live_hostname)
    # The ready line tells a harness or operator the instance is configured: what the agent
    # wrote must then survive a power cut (a harness may stop the machine right after it).
    [ "$DRYRUN" = 1 ] || ! have sync || sync
    log "ready instance-id=${INSTANCE_ID:-none} hostname=${_m_host:-localhost} source=$SOURCE"
    return 0
}

if [ "${IMAGEWRIGHT_AGENT_LIB:-0}" != 1 ]; then
    case ${1:-} in
        -h | --help)
            sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
    esac
    main "$@"
    exit 0
fi
