BEGIN { FS = "\t"; pp = (p == "" ? "" : p "/") }
{ v = substr($0, length($1) + 2) }
mode == "get" && $1 == p { print unesc(v); exit }
mode == "list" && substr($1, 1, length(pp)) == pp && substr($1, length(pp) + 1) ~ /^[0-9]+$/ { print unesc(v) }
mode == "under" && ($1 == p || substr($1, 1, length(pp)) == pp) { print unesc(v) }
mode == "keys" && substr($1, 1, length(pp)) == pp {
    k = substr($1, length(pp) + 1); sub(/\/.*/, "", k)
    if (k != "" && !(k in seen)) { seen[k] = 1; print k }
}
