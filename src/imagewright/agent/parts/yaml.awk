# yaml.awk: the YAML subset of cloud metadata, flattened to "path<TAB>value" lines.
#   awk -f common.awk -f yaml.awk FILE
# Block mappings and sequences by indentation, "- key: v" items, flow sequences and mappings of
# scalars ([a, b], {a: 1}), plain, single- and double-quoted scalars, literal/folded block
# scalars (| >), comments, document markers.
# Not supported (skipped): anchors/aliases, tags, complex keys, nested flow collections,
# multi-line plain scalars. Indentation must be spaces, as YAML requires.
# Each "- " opens a node one half-level deeper than its column, so "key:" followed by items at
# the same column still nests the items under the key.
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
