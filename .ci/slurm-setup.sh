#!/usr/bin/env bash
# Install Debian's SLURM and munge so tests/test_slurm_cluster.py can run the tiny
# pipeline through a real local cluster (tests/slurm/cluster.sh starts it).
# Idempotent and quick when already installed; never fails CI: without apt or
# root, it says why and the test skips with the same reason.
set -u

PACKAGES=(slurmctld slurmd slurm-client munge)
BINARIES=(munged slurmctld slurmd sbatch squeue sinfo scontrol srun)

have_all() {
    local b
    for b in "${BINARIES[@]}"; do
        command -v "$b" >/dev/null 2>&1 || return 1
    done
}

if have_all; then
    echo "slurm-setup: slurm and munge already installed ($(slurmd -V 2>/dev/null))"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "slurm-setup: no apt-get here; the real-SLURM test will skip"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "slurm-setup: not root, cannot apt-get install; the real-SLURM test will skip"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# The packages' postinst scripts try to start services; without systemd that is
# only a warning, and tests/slurm/cluster.sh starts private daemons instead.
if ! timeout 300 apt-get install -y --no-install-recommends "${PACKAGES[@]}" >/tmp/slurm-setup.log 2>&1; then
    # the package lists may be missing or stale: refresh once and retry
    timeout 300 apt-get update >>/tmp/slurm-setup.log 2>&1 || true
    timeout 300 apt-get install -y --no-install-recommends "${PACKAGES[@]}" >>/tmp/slurm-setup.log 2>&1 || true
fi

if have_all; then
    echo "slurm-setup: installed $(slurmd -V 2>/dev/null)"
else
    echo "slurm-setup: install failed (see /tmp/slurm-setup.log); the real-SLURM test will skip"
    tail -n 5 /tmp/slurm-setup.log || true
fi
exit 0
