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
# exists); returns 0 when DEST changed, 1 when it was already right, 2 (logged) when it could
# not be written.
replace_file() {
    _rf_dest=$1
    _rf_new=$2
    _rf_mode=${3:-644}
    if [ -f "$_rf_dest" ] && cmp -s "$_rf_new" "$_rf_dest"; then
        return 1
    fi
    if [ -f "$_rf_dest" ]; then
        cat "$_rf_new" >"$_rf_dest" && return 0
    elif mkdir -p "${_rf_dest%/*}" && cp "$_rf_new" "$_rf_dest" && chmod "$_rf_mode" "$_rf_dest"; then
        return 0
    fi
    log "could not write ${_rf_dest#"$R"}"
    return 2
}

