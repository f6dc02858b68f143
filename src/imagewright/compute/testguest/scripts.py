"""The shell scripts and configuration files of the test guest (busybox ash, POSIX sh).

Kept as text here so the initramfs cache key and the tests see exactly what the guest runs.
"""

from __future__ import annotations

#: The first words of the one line the guest prints when it is up (see ``RCS``).
MARKER_PREFIX = "imagewright-testguest: up"
#: Kernel command-line word that makes the guest power off right after the marker.
POWEROFF_ARGUMENT = "imagewright.poweroff"
#: Prefix of every line the initramfs prints (its errors included).
INITRAMFS_PREFIX = "imagewright-initramfs:"

#: /init of the initramfs. Loads the modules listed (in dependency order) in
#: /etc/initramfs-modules, finds the root filesystem named by root= on the kernel command
#: line (UUID=, LABEL= or a /dev path; waits for it, as rootwait does), mounts it and hands
#: over to its /sbin/init. On failure it says why on the console, then powers off when
#: imagewright.poweroff is on the command line, else opens a shell.
INITRAMFS_INIT = r"""#!/bin/sh
# imagewright test guest initramfs: load the disk drivers, find root=, switch to it.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() { echo "imagewright-initramfs: $*"; }
fail() {
    say "error: $*"
    if grep -qw imagewright.poweroff /proc/cmdline; then poweroff -f; fi
    exec sh
}

release=$(uname -r)
while read -r module; do
    [ -n "$module" ] || continue
    # Modules that do not fit this machine (crc32c-intel without SSE4.2) fail harmlessly.
    insmod "/lib/modules/$release/$module" 2>/dev/null
done < /etc/initramfs-modules

root=
fstype=
mode=ro
wait_seconds=30
init=/sbin/init
set -f
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root=${arg#root=} ;;
        rootfstype=*) fstype=${arg#rootfstype=} ;;
        rootdelay=*) wait_seconds=${arg#rootdelay=} ;;
        init=*) init=${arg#init=} ;;
        rw) mode=rw ;;
        ro) mode=ro ;;
    esac
done
set +f
[ -n "$root" ] || fail "no root= on the kernel command line"

resolve() {
    case "$1" in
        UUID=*|LABEL=*) findfs "$1" 2>/dev/null ;;
        /dev/*) if [ -b "$1" ]; then echo "$1"; fi ;;
        *) return 1 ;;
    esac
}

device=
tries=$((wait_seconds * 5))
while [ "$tries" -gt 0 ]; do
    device=$(resolve "$root")
    [ -n "$device" ] && break
    usleep 200000
    tries=$((tries - 1))
done
[ -n "$device" ] || fail "root device $root did not appear within $wait_seconds s"

mkdir -p /newroot
if [ -n "$fstype" ]; then
    mount -t "$fstype" -o "$mode" "$device" /newroot || fail "cannot mount $device ($fstype) on /"
else
    mount -o "$mode" "$device" /newroot || fail "cannot mount $device on /"
fi
[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || fail "$device has no $init"
say "root $device mounted $mode, starting $init"

mount --move /dev /newroot/dev 2>/dev/null || umount /dev
umount /sys
umount /proc
exec switch_root /newroot "$init"
"""

#: /etc/inittab for busybox init: rcS once, a shell on the console on demand, clean shutdown.
INITTAB = """\
# busybox init: the system start script, then a shell on the console when Enter is pressed.
::sysinit:/etc/init.d/rcS
::askfirst:-/bin/sh
::ctrlaltdel:/sbin/reboot -f
::shutdown:/sbin/swapoff -a
::shutdown:/bin/umount -a -r
"""

#: /etc/init.d/rcS: the whole boot of the test guest. Ends with the marker line.
RCS = r"""#!/bin/sh
# imagewright test guest: mount, name, load modules, swap, run S* scripts and rc.local,
# then print the marker line (and power off when imagewright.poweroff is on the cmdline).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# busybox-static has no mountpoint applet: /proc/mounts tells what is mounted.
mounted() { grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null; }
mounted /proc || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mounted /dev/pts || mount -t devpts devpts /dev/pts
mounted /tmp || mount -t tmpfs -o mode=1777 tmpfs /tmp
mounted /run || mount -t tmpfs -o mode=0755 tmpfs /run
mount -o remount,rw / 2>/dev/null

if [ -s /etc/hostname ]; then hostname -F /etc/hostname; fi

if [ -f /etc/modules ]; then
    while read -r module _; do
        case "$module" in ''|'#'*) continue ;; esac
        modprobe -q "$module" 2>/dev/null
    done < /etc/modules
fi

# busybox swapon -a resolves UUID= and LABEL= specs in /etc/fstab itself (verified with
# busybox-static 1.35 from Debian 12: a UUID= swap partition is active after it).
swapon -a 2>/dev/null

for script in /etc/init.d/S*; do
    [ -x "$script" ] && "$script" start
done

if [ -x /etc/rc.local ]; then /etc/rc.local; fi

# Everything the boot wrote (host keys, an agent's files) is on the disk once the marker
# shows: a harness may stop the machine the moment it sees it.
sync
swaps=$(($(wc -l < /proc/swaps) - 1))
root=$(awk '$2 == "/" { device = $1 } END { print device }' /proc/mounts)
echo "imagewright-testguest: up hostname=$(hostname) swaps=$swaps root=$root"
if grep -qw imagewright.poweroff /proc/cmdline; then
    poweroff -f
fi
"""

#: busybox udhcpc calls this with the lease in its environment (bound/renew/deconfig).
UDHCPC_SCRIPT = r"""#!/bin/sh
# busybox udhcpc lease script: configure the interface, routes and resolv.conf.
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip -4 addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
        ip link set "$interface" up
        for gateway in $router; do
            ip -4 route replace default via "$gateway" dev "$interface" && break
        done
        if [ -n "$dns" ]; then
            : > /etc/resolv.conf
            [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
            for server in $dns; do echo "nameserver $server" >> /etc/resolv.conf; done
        fi
        ;;
esac
exit 0
"""

RC_LOCAL = """\
#!/bin/sh
# rc.local: run by /etc/init.d/rcS at the end of the boot, before the marker line.
exit 0
"""

#: /etc/passwd
USERS = """\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""

GROUP = """\
root:x:0:
nogroup:x:65534:
"""

#: Root's password is locked ("!"): nobody logs in with a password.
SHADOW = """\
root:!:19000:0:99999:7:::
nobody:!:19000:0:99999:7:::
"""

HOSTNAME = "testguest\n"

HOSTS = """\
127.0.0.1	localhost
127.0.1.1	testguest
::1	localhost ip6-localhost ip6-loopback
"""

FSTAB = """\
# <file system> <mount point> <type> <options> <dump> <pass>
# The root filesystem is mounted by the initramfs (root= on the kernel command line).
"""

NSSWITCH = """\
passwd: files
group: files
shadow: files
hosts: files dns
"""

PROFILE = """\
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PS1='\\h:\\w\\$ '
"""

OS_RELEASE = """\
PRETTY_NAME="imagewright test guest (Debian kernel, busybox)"
NAME="imagewright test guest"
ID=imagewright-testguest
"""
