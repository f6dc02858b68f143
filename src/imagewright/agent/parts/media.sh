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

