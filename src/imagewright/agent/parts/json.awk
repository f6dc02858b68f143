# json.awk: JSON by recursive descent, flattened to "path<TAB>value" lines.
#   awk -f common.awk -f json.awk FILE
# Strings keep their \n \t \r \\ escapes (already the flat format), \" and \/ are decoded,
# \uXXXX is decoded for printable ASCII and kept as written otherwise.
# Exits 1 on malformed input or nesting deeper than 64.
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
