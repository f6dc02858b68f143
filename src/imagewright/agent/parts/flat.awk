# flat.awk: look things up in "path<TAB>value" lines (what yaml.awk and json.awk print).
#   awk -v mode=MODE -v p=PATH -f common.awk -f flat.awk FLAT
# mode get: the value at PATH (decoded); list: the items of the list at PATH; under: every value
# at or below PATH; keys: the names of the children of PATH, each once, in order.
BEGIN { FS = "\t"; pp = (p == "" ? "" : p "/") }
{ v = substr($0, length($1) + 2) }
mode == "get" && $1 == p { print unesc(v); exit }
mode == "list" && substr($1, 1, length(pp)) == pp && substr($1, length(pp) + 1) ~ /^[0-9]+$/ { print unesc(v) }
mode == "under" && ($1 == p || substr($1, 1, length(pp)) == pp) { print unesc(v) }
mode == "keys" && substr($1, 1, length(pp)) == pp {
    k = substr($1, length(pp) + 1); sub(/\/.*/, "", k)
    if (k != "" && !(k in seen)) { seen[k] = 1; print k }
}
