# common.awk: helpers of the agent readers (yaml.awk, json.awk, flat.awk), which need it first:
#   awk -f common.awk -f yaml.awk FILE
# esc and unesc write and read the escapes of the flat format: backslash, tab, newline and CR
# as \\ \t \n \r.
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
