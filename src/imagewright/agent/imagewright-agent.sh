#!/bin/sh
# imagewright-agent — the in-guest contextualization agent of imagewright.
#
# Runs at every boot (a systemd oneshot unit, rc.local or an init.d script installed by
# `imagewright prepare --agent`), finds the data the cloud hands this instance, applies it,
# and prints exactly one line at the end:
#
#   imagewright-agent: ready instance-id=<id> hostname=<name> source=<configdrive|nocloud|opennebula|wakame|ec2|none>
#
# <name> is the short host name it set (web1 for web1.example.com, which goes into /etc/hosts),
# or the machine's own when the source gives none; <id> is "none" when no source answered.
# Instance ids and names are cleaned first ([A-Za-z0-9._-] and [A-Za-z0-9.-]; see clean_*).
#
# Sources, tried in this order; the first one that yields data wins:
#   configdrive  OpenStack config drive: filesystem labelled config-2 / CONFIG-2,
#                openstack/latest/meta_data.json (+ user_data, network_data.json)
#   nocloud      cloud-init NoCloud seed: label cidata / CIDATA, meta-data (+ user-data, network-config)
#   opennebula   OpenNebula context CD: label CONTEXT, context.sh (+ init.sh), incl. StratusLab names
#   wakame       Wakame-vdc metadata drive: VFAT disk labelled METADATA holding a meta-data/ tree
#   ec2          EC2 instance metadata service at 169.254.169.254: IMDSv2 token first, else IMDSv1
#
# What it applies, and how often (each step declares it in AGENT_STEPS, above main, as
# cloud-init's modules declare their frequency; one runner keeps the markers):
#   once per instance-id: hostname (/etc/hostname, the 127.0.1.1 line of /etc/hosts),
#       authorized_keys, fresh SSH host keys (cloud-init deletes and regenerates them on a new
#       instance too, so clones never share host keys; HOST_KEYS=missing turns that off),
#       OpenNebula's init scripts (INIT_SCRIPTS, default init.sh), and the user-data when it
#       is a script (#!; OpenNebula's START_SCRIPT counts as one). #cloud-config user-data is
#       not run; only its ssh_authorized_keys and hostname are used.
#   every boot: the running hostname from /etc/hostname, the network (static from the source,
#       else DHCP when no interface has an address), missing SSH host keys, Wakame extra-hosts,
#       and growing the root partition and filesystem when the disk has room.
# A second boot with the same instance-id therefore changes no file (only the log grows) and
# never re-runs user-data; a new instance-id re-applies every per-instance step. A step that
# fails is logged, the steps after it still run, and a per-instance step that failed runs
# again at the next boot (a user-data script that exits non-zero has not failed the step: its
# status is recorded, and it is not run again).
#
# Files:
#   /etc/imagewright/agent.conf        optional settings, KEY=VALUE lines (not sourced, parsed):
#       DEFAULT_USER=debian            whose authorized_keys receive the keys (default root)
#       SOURCES="nocloud ec2"          which sources to try, in this order (default: all, as above)
#       GROW_ROOT=no                   do not grow the root partition/filesystem (default yes)
#       HOST_KEYS=missing              only create missing host keys (default per-instance)
#       DHCP=no                        never run a DHCP client (default yes)
#   /var/lib/imagewright-agent/<instance-id>/   per-instance state: sem/<step> markers of the
#       steps done (sem/instance once a whole boot went through), the user-data script,
#       user-data.log (its output), user-data.status (its exit status), source
#   /var/lib/imagewright-agent/.sem/<step>   markers of steps run once in the machine's life
#   /var/lib/imagewright-agent/.last-instance-id
#   /var/log/imagewright-agent.log     a copy of everything printed
#
# Never fails the boot: every error is logged and the script exits 0.
# Everything is printed with the prefix "imagewright-agent:" on standard output, which the boot
# hook connects to the console (StandardOutput=journal+console, or >/dev/console).
#
# Security: metadata is data. context.sh is read by a separate shell with an empty environment;
# values never reach eval or an unquoted command line; keys must look like public keys; paths
# from the medium are checked; the files parsed are bounded (1 MiB).
#
# Test hooks (few, and only these):
#   IMAGEWRIGHT_AGENT_ROOT=DIR     every absolute path the agent reads or writes (/etc, /var, /root,
#                                  /home, /run, /tmp, /dev, /proc, /sys) resolves under DIR
#   IMAGEWRIGHT_AGENT_DRYRUN=1     commands that change or query the running system (hostname, ip,
#                                  ifconfig, route, DHCP clients, mount, modprobe, sfdisk writes,
#                                  partx, resize2fs, blkid/findfs probes) are logged as
#                                  "dry-run: COMMAND" instead of run; files under the root are still
#                                  written, host keys still generated, user-data still run;
#                                  media are looked for only under the root
#   IMAGEWRIGHT_AGENT_MEDIA_DIR=DIR  a directory standing for an already mounted medium, of kind
#   IMAGEWRIGHT_AGENT_MEDIA_KIND=K   configdrive|nocloud|opennebula|wakame (guessed when empty)
#   IMAGEWRIGHT_AGENT_IMDS=URL     base URL of the EC2 metadata service (http://HOST[:PORT])
#   IMAGEWRIGHT_AGENT_LIB=1        when sourced: define the functions, run nothing (unit tests)
#
# Portability: POSIX sh only (busybox ash, dash, bash); POSIX awk (mawk, gawk, busybox awk);
# no python, no jq needed (jq is used for JSON when present). Functions use prefixed names
# instead of `local`, which POSIX does not define.

AGENT_PREFIX='imagewright-agent:'
LC_ALL=C
export LC_ALL
: "${PATH:=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"

R=${IMAGEWRIGHT_AGENT_ROOT:-}
R=${R%/}
DRYRUN=${IMAGEWRIGHT_AGENT_DRYRUN:-0}
IMDS_BASE=${IMAGEWRIGHT_AGENT_IMDS:-http://169.254.169.254}
STATE="$R/var/lib/imagewright-agent"
LOG_FILE="$R/var/log/imagewright-agent.log"
LOCK_DIR="$R/run/imagewright-agent.lock"
WORK=
MEDIUM_DIR=
MEDIUM_MOUNTED=0
MAX_PARSE_BYTES=1048576   # metadata files we parse are small; refuse anything bigger

# The parts below are joined in here when the agent is packaged (imagewright.agent.agent_script):
# the installed agent is this one file, and sources nothing.
#include parts/log.sh
#include parts/text.sh
#include parts/data.sh
#include parts/media.sh
#include parts/context.sh
#include parts/source-configdrive.sh
#include parts/source-nocloud.sh
#include parts/source-opennebula.sh
#include parts/source-wakame.sh
#include parts/source-ec2.sh
#include parts/network.sh
#include parts/hostname.sh
#include parts/ssh.sh
#include parts/grow.sh
#include parts/scripts.sh
#include parts/steps.sh
# ---------------------------------------------------------------------------------------------
# Setup, lock, cleanup, main
# ---------------------------------------------------------------------------------------------

load_config() {
    CONF_DEFAULT_USER=root
    CONF_SOURCES=" configdrive nocloud opennebula wakame ec2"
    CONF_GROW_ROOT=yes
    CONF_HOST_KEYS=per-instance
    CONF_DHCP=yes
    _lc_file=$R/etc/imagewright/agent.conf
    [ -r "$_lc_file" ] || return 0
    while IFS= read -r _lc_line || [ -n "$_lc_line" ]; do
        _lc_line=$(trim "$_lc_line")
        case $_lc_line in '' | '#'*) continue ;; *=*) ;; *) continue ;; esac
        _lc_key=$(trim "${_lc_line%%=*}")
        _lc_val=$(trim "${_lc_line#*=}")
        case $_lc_val in
            \"*\") _lc_val=${_lc_val#\"} _lc_val=${_lc_val%\"} ;;
            \'*\') _lc_val=${_lc_val#\'} _lc_val=${_lc_val%\'} ;;
        esac
        case $_lc_key in
            DEFAULT_USER)
                case $_lc_val in
                    [a-z_]*[!a-z0-9_-]* | [!a-z_]* | '') log "agent.conf: DEFAULT_USER '$_lc_val' is not a user name; ignored" ;;
                    *) CONF_DEFAULT_USER=$_lc_val ;;
                esac
                ;;
            SOURCES)
                CONF_SOURCES=
                for _lc_s in $(printf '%s' "$_lc_val" | tr ',' ' '); do
                    case $_lc_s in
                        configdrive | nocloud | opennebula | wakame | ec2) CONF_SOURCES="$CONF_SOURCES $_lc_s" ;;
                        *) log "agent.conf: unknown source '$_lc_s' ignored" ;;
                    esac
                done
                ;;
            GROW_ROOT) case $_lc_val in no | false | 0) CONF_GROW_ROOT=no ;; *) CONF_GROW_ROOT=yes ;; esac ;;
            HOST_KEYS) case $_lc_val in missing) CONF_HOST_KEYS=missing ;; *) CONF_HOST_KEYS=per-instance ;; esac ;;
            DHCP) case $_lc_val in no | false | 0) CONF_DHCP=no ;; *) CONF_DHCP=yes ;; esac ;;
            *) log "agent.conf: unknown setting '$_lc_key' ignored" ;;
        esac
    done <"$_lc_file"
}

make_workdir() {
    for _mw_base in "$R/run" "${TMPDIR:-$R/tmp}" "$R/tmp"; do
        if [ ! -d "$_mw_base" ] || [ ! -w "$_mw_base" ]; then
            continue
        fi
        if have mktemp; then
            WORK=$(mktemp -d "$_mw_base/imagewright-agent.XXXXXX" 2>/dev/null) && return 0
        fi
        WORK=$_mw_base/imagewright-agent.$$
        (umask 077 && mkdir "$WORK") 2>/dev/null && return 0
    done
    WORK=
    return 1
}

cleanup() {
    release_medium
    if [ -n "$WORK" ] && [ -d "$WORK" ] && [ "$MEDIUM_MOUNTED" != 1 ]; then
        rm -rf "$WORK"
    fi
    [ "${LOCK_HELD:-0}" = 1 ] && rm -rf "$LOCK_DIR"
    LOCK_HELD=0
}

acquire_lock() {
    mkdir -p "${LOCK_DIR%/*}" 2>/dev/null
    if mkdir "$LOCK_DIR" 2>/dev/null; then
        echo $$ >"$LOCK_DIR/pid"
        LOCK_HELD=1
        return 0
    fi
    _al_pid=$(cat "$LOCK_DIR/pid" 2>/dev/null)
    if [ -n "$_al_pid" ] && kill -0 "$_al_pid" 2>/dev/null; then
        return 1
    fi
    # a lock left by a run that died (the machine crashed, say)
    rm -rf "$LOCK_DIR"
    mkdir "$LOCK_DIR" 2>/dev/null || return 1
    echo $$ >"$LOCK_DIR/pid"
    LOCK_HELD=1
}

find_source() {
    SOURCE=none
    for _fs in $CONF_SOURCES; do
        reset_context
        if "source_$_fs"; then
            SOURCE=$_fs
            return 0
        fi
        release_medium
    done
    reset_context
    return 1
}

# What the agent applies, in this order, and how often (see parts/steps.sh for the runner).
# Network and host names come first; scripts come last, so that they see the machine configured.
#   NAME               FREQUENCY     WHEN                   FUNCTION
AGENT_STEPS='
hostname           per-instance  has_hostname           apply_hostname
ssh-keys           per-instance  -                      apply_ssh_keys
running-hostname   per-boot      -                      sync_hostname
network            per-boot      -                      apply_network
extra-hosts        per-boot      -                      apply_extra_hosts
host-keys          per-instance  host_keys_per_instance replace_host_keys
missing-host-keys  per-boot      host_keys_not_replaced add_missing_host_keys
grow-root          per-boot      -                      grow_root
init-scripts       per-instance  has_init_scripts       run_init_scripts
user-data          per-instance  user_data_is_script    run_user_data
'

main() {
    umask 022
    mkdir -p "${LOG_FILE%/*}" 2>/dev/null || LOG_FILE=
    load_config
    if ! make_workdir; then
        log "no writable /run or /tmp; nothing can be done"
        log "ready instance-id=none hostname=$(live_hostname) source=none"
        return 0
    fi
    trap cleanup EXIT
    trap 'cleanup; exit 0' INT TERM HUP
    if ! acquire_lock; then
        log "another imagewright-agent is running; this one stops"
        return 0
    fi
    _m_mode=
    [ "$DRYRUN" = 1 ] && _m_mode=" dry-run"
    log "starting (sources:$CONF_SOURCES)${R:+ root=$R}$_m_mode"

    find_source
    log "source: $SOURCE"

    open_instance
    run_steps
    close_instance

    _m_host=${HOST_APPLIED%%.*}
    [ -n "$_m_host" ] || _m_host=$(first_line "$R/etc/hostname")
    [ -n "$_m_host" ] || _m_host=$(live_hostname)
    # The ready line tells a harness or operator the instance is configured: what the agent
    # wrote must then survive a power cut (a harness may stop the machine right after it).
    [ "$DRYRUN" = 1 ] || ! have sync || sync
    log "ready instance-id=${INSTANCE_ID:-none} hostname=${_m_host:-localhost} source=$SOURCE"
    return 0
}

if [ "${IMAGEWRIGHT_AGENT_LIB:-0}" != 1 ]; then
    case ${1:-} in
        -h | --help)
            sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
    esac
    main "$@"
    exit 0
fi
