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

