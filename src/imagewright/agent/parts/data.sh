# ---------------------------------------------------------------------------------------------
# Structured data: YAML (a subset), JSON, flattened to "path<TAB>value" lines.
#
# Both readers print one line per scalar: the path of keys and list indexes joined by "/"
# ("ethernets/eth0/addresses/0") and the value with backslash, tab, newline and CR written as
# \\ \t \n \r — the same lines `jq -r '... | @tsv'` prints, so either can feed flat_get.
# ---------------------------------------------------------------------------------------------

AWK_COMMON='
#include common.awk
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
#include yaml.awk
'

# JSON by recursive descent. Strings keep their \n \t \r \\ escapes (already the flat format),
# \" and \/ are decoded, \uXXXX is decoded for printable ASCII and kept as written otherwise.
# Exits 1 on malformed input or nesting deeper than 64.
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

