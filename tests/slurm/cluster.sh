#!/usr/bin/env bash
# Start, stop or inspect a throw-away single-node SLURM cluster (munged, slurmctld,
# slurmd as root, no systemd) whose config, state, sockets and logs all live in
# one directory, so the end-to-end test can run `snakemake --profile slurm`.
#
#   tests/slurm/cluster.sh start|stop|status|env [DIR]
#
# DIR defaults to $GALSEP_SLURM_DIR or ${TMPDIR:-/tmp}/galsep-slurm. After `start`,
# `source DIR/env` (or `eval "$(cluster.sh env DIR)"`) points sbatch/squeue/srun at
# it (SLURM_CONF and PATH).
# Knobs: GALSEP_SLURM_PORT (slurmctld port; slurmd uses +1), GALSEP_SLURM_GPUS
# (number of fake GPUs, default 2), GALSEP_SLURM_PARTITION (default "gpu"),
# GALSEP_SLURM_MEMORY (MB the node advertises at least, default 65536).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CMD="${1:-status}"
DIR="${2:-${GALSEP_SLURM_DIR:-${TMPDIR:-/tmp}/galsep-slurm}}"
CTLD_PORT="${GALSEP_SLURM_PORT:-16817}"
NGPU="${GALSEP_SLURM_GPUS:-2}"
PARTITION="${GALSEP_SLURM_PARTITION:-gpu}"
MEMORY_MB="${GALSEP_SLURM_MEMORY:-65536}"
export SLURM_CONF="$DIR/slurm.conf"

die() { echo "cluster.sh: $*" >&2; exit 1; }

need_binaries() {
    local b
    for b in munged slurmctld slurmd sbatch squeue sinfo scontrol; do
        command -v "$b" >/dev/null || die "missing '$b' (apt-get install slurmctld slurmd slurm-client munge)"
    done
    [ "$(id -u)" = 0 ] || die "must run as root (slurmd and munged need it)"
    id munge >/dev/null 2>&1 || die "no 'munge' user (install the munge package)"
}

pid_alive() {  # pid_alive PIDFILE
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE: TERM, wait, then KILL
    local name="$1" file="$2" pid i
    [ -s "$file" ] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "cluster.sh: $name ($pid) ignored TERM, killing" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

render() {  # render TEMPLATE OUTPUT with @VAR@ substitution
    local host node_line gres_lines i
    host="$(hostname -s)"
    # The node line is what `slurmd -C` measures, except memory: the profile asks
    # for realistic GPU-job memory, so the node advertises at least
    # GALSEP_SLURM_MEMORY MB (config_overrides keeps slurmd from draining it; no
    # cgroups means nothing is enforced anyway).
    node_line="$(slurmd -C | head -n1)"
    local real_mb="${node_line##*RealMemory=}"
    real_mb="${real_mb%% *}"
    if [ "$real_mb" -lt "$MEMORY_MB" ]; then
        node_line="${node_line/RealMemory=$real_mb/RealMemory=$MEMORY_MB}"
    fi
    # slurmd rejects two GPUs on one device file, so each fake GPU borrows a
    # different harmless character device
    local devices=(/dev/null /dev/zero /dev/full /dev/urandom)
    [ "$NGPU" -ge 1 ] && [ "$NGPU" -le "${#devices[@]}" ] || die "GALSEP_SLURM_GPUS must be 1..${#devices[@]}"
    gres_lines=""
    for i in $(seq 0 $((NGPU - 1))); do
        gres_lines+="Name=gpu File=${devices[$i]}"$'\n'
    done
    sed -e "s|@DIR@|$DIR|g" -e "s|@HOST@|$host|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$((CTLD_PORT + 1))|g" \
        -e "s|@NODE_LINE@|$node_line|g" -e "s|@NGPU@|$NGPU|g" \
        -e "s|@PARTITION@|$PARTITION|g" "$HERE/slurm.conf.in" > "$DIR/slurm.conf"
    awk -v lines="$gres_lines" '{ if ($0 == "@GRES_LINES@") printf "%s", lines; else print }' \
        "$HERE/gres.conf.in" > "$DIR/gres.conf"
    # The slurm-jobstep plugin strips SLURM_* (SLURM_CONF included) before its
    # nested `srun`, which would then look for /etc/slurm/slurm.conf. Rather than
    # writing to /etc, put an srun shim that restores SLURM_CONF first on PATH.
    mkdir -p "$DIR/bin"
    printf '#!/bin/sh\nSLURM_CONF=%q exec %q "$@"\n' "$SLURM_CONF" "$(command -v srun)" > "$DIR/bin/srun"
    chmod 0755 "$DIR/bin/srun"
    env_lines > "$DIR/env"
}

env_lines() {
    printf 'export SLURM_CONF=%q\n' "$SLURM_CONF"
    printf 'export PATH=%q:"$PATH"\n' "$DIR/bin"
}

start_munge() {
    # munged refuses keys and sockets that others could write, and must not run
    # as root: give it its own directory owned by the munge user.
    mkdir -p "$DIR/munge"
    # mkdtemp makes DIR 0700; munged (user munge) has to traverse it
    chmod 0711 "$DIR"
    runuser -u munge -- test -x "$DIR" || die "user munge cannot reach $DIR (a parent directory is closed)"
    chown munge:munge "$DIR/munge"
    chmod 0700 "$DIR/munge"
    if [ ! -s "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$DIR/munge/munge.key"
    chmod 0400 "$DIR/munge/munge.key"
    pid_alive "$DIR/munge/munged.pid" && return 0
    rm -f "$DIR/munge/munge.socket.2" "$DIR/munge/munge.socket.2.lock"
    runuser -u munge -- munged --force \
        --socket="$DIR/munge/munge.socket.2" \
        --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" \
        --seed-file="$DIR/munge/munged.seed" \
        --log-file="$DIR/munge/munged.log"
    # clients need to reach the socket through the directory
    chmod 0711 "$DIR/munge"
}

wait_idle() {  # wait until the node accepts jobs
    local i state=""
    for i in $(seq 60); do
        state="$(sinfo -h -N -o %T 2>/dev/null | head -n1 || true)"
        case "$state" in
            idle|mixed|allocated) return 0 ;;
        esac
        sleep 0.5
    done
    echo "cluster.sh: node state '$state' after 30 s" >&2
    return 1
}

cmd_start() {
    need_binaries
    if pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid"; then
        wait_idle
        echo "cluster already running in $DIR"
        return 0
    fi
    cmd_stop >/dev/null 2>&1 || true
    mkdir -p "$DIR"/{state,spool,run,log}
    # a fresh controller state: no jobs or node states from a previous run
    rm -rf "${DIR:?}/state"/*
    render
    start_munge
    if ! { slurmctld -f "$SLURM_CONF" && slurmd -f "$SLURM_CONF" && wait_idle; }; then
        tail -n 5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
        die "cluster failed to start; logs in $DIR/log"
    fi
    echo "cluster up in $DIR: source $DIR/env"
}

cmd_stop() {
    if [ -f "$SLURM_CONF" ] && pid_alive "$DIR/run/slurmctld.pid"; then
        # jobs would otherwise outlive slurmd as orphaned slurmstepd processes
        scancel --user="$(id -un)" 2>/dev/null || true
        sleep 1
    fi
    stop_pidfile slurmd "$DIR/run/slurmd.pid"
    stop_pidfile slurmctld "$DIR/run/slurmctld.pid"
    stop_pidfile munged "$DIR/munge/munged.pid"
    echo "cluster stopped ($DIR)"
}

cmd_status() {
    local ok=0
    pid_alive "$DIR/munge/munged.pid" || { echo "munged: down"; ok=1; }
    pid_alive "$DIR/run/slurmctld.pid" || { echo "slurmctld: down"; ok=1; }
    pid_alive "$DIR/run/slurmd.pid" || { echo "slurmd: down"; ok=1; }
    if [ "$ok" = 0 ]; then
        sinfo -N -o '%N %P %T %c %m %G'
    fi
    return "$ok"
}

case "$CMD" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) env_lines ;;
    *) die "usage: $0 start|stop|status|env [DIR]" ;;
esac
