# ---------------------------------------------------------------------------------------------
# Structured data: YAML (a subset), JSON, flattened to "path<TAB>value" lines.
#
# Both readers print one line per scalar: the path of keys and list indexes joined by "/"
# ("ethernets/eth0/addresses/0") and the value with backslash, tab, newline and CR written as
# \\ \t \n \r — the same lines `jq -r '... | @tsv'` prints, so either can feed flat_get.
# ---------------------------------------------------------------------------------------------

# The readers are awk programs (parts/*.awk, each runnable on its own with awk -f), kept in
# shell strings: the installed agent is one file.
AWK_COMMON='
#include common.awk
'
# shellcheck disable=SC2016 # an awk program: its $ are awk's
AWK_YAML='
#include yaml.awk
'
# shellcheck disable=SC2016 # an awk program: its $ are awk's
AWK_JSON='
#include json.awk
'
# shellcheck disable=SC2016 # an awk program: its $ are awk's
AWK_FLAT='
#include flat.awk
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

