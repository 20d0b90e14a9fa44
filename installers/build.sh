#!/usr/bin/env bash
# Build Concord's one-folder desktop application with PyInstaller (Linux).
#
#   installers/build.sh [--variant cpu|gpu] [--out DIR] [--python PY] [--reuse-venv] [--no-archive]
#
# Creates a fresh virtual environment in DIR/venv, installs Concord from a
# clean copy of the source (DIR/src) with PyInstaller, and runs
# installers/concord.spec.  Result:
#
#   DIR/dist/concord/concord                                the program
#   DIR/concord-VERSION-linux-x86_64-VARIANT.tar.gz         the archive to hand out
#   DIR/build-info.txt                                      versions, times, sizes
#
# Variants:
#   cpu  torch $CONCORD_CPU_TORCH (default 2.13.0+cpu, from pip's find-links or
#        PyTorch's CPU index: set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu)
#        and torchvision $CONCORD_CPU_TORCHVISION (default 0.28.0, made importable
#        on CPU torch by installers/torchvision_cpu.py).  Runs anywhere, no GPU.
#   gpu  the standard PyPI torch with its CUDA libraries (NVIDIA GPU, or CPU).
#
# DIR defaults to ${TMPDIR:-/tmp}/concord-installers/VARIANT and must lie
# outside the repository.  --reuse-venv keeps an existing DIR/venv (faster
# rebuilds after a change to the code or the spec).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VARIANT=cpu
OUT=
PYTHON=${PYTHON:-python3}
REUSE_VENV=0
ARCHIVE=1

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "build.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --variant) [[ $# -ge 2 ]] || die "--variant needs cpu or gpu"; VARIANT=$2; shift 2 ;;
    --variant=*) VARIANT=${1#*=}; shift ;;
    --out) [[ $# -ge 2 ]] || die "--out needs a folder"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --python) [[ $# -ge 2 ]] || die "--python needs an interpreter"; PYTHON=$2; shift 2 ;;
    --reuse-venv) REUSE_VENV=1; shift ;;
    --no-archive) ARCHIVE=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ $VARIANT == cpu || $VARIANT == gpu ]] || die "--variant must be cpu or gpu, not '$VARIANT'"
OUT=$(realpath -m "${OUT:-${TMPDIR:-/tmp}/concord-installers/$VARIANT}")
case "$OUT/" in
  "$(realpath "$ROOT")/"*) die "--out $OUT lies inside the repository; choose a folder outside it" ;;
esac
command -v "$PYTHON" >/dev/null || die "no Python interpreter '$PYTHON'"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than 3.11"
mkdir -p "$OUT"

VENV=$OUT/venv
SRC=$OUT/src
WORK=$OUT/work
DIST=$OUT/dist
PY=$VENV/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONNOUSERSITE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }
step() { printf '\n== %s\n' "$*"; }

T0=$(now)

# 1. the build environment ---------------------------------------------------------
step "virtual environment: $VENV"
if [[ $REUSE_VENV == 1 && -x $PY ]]; then
  echo "reusing it (--reuse-venv)"
else
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [[ $VARIANT == cpu ]]; then
  step "CPU torch and torchvision"
  "$PY" -m pip install "torch==${CONCORD_CPU_TORCH:-2.13.0+cpu}" \
                       "torchvision==${CONCORD_CPU_TORCHVISION:-0.28.0}"
fi

# 2. Concord from a clean copy of the source (keeps build/ and *.egg-info out of the repo)
step "Concord and PyInstaller"
rm -rf "$SRC"
mkdir -p "$SRC"
tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
    -cf - pyproject.toml README.md app core_model training | tar -C "$SRC" -xf -
"$PY" -m pip install "$SRC[postgres]" "pyinstaller>=6.10"
if [[ $VARIANT == cpu ]]; then
  "$PY" -c 'import importlib.metadata as m, sys; v = m.version("torch"); print("torch", v); sys.exit("+cpu" not in v)' \
    || die "the CPU variant's torch was replaced by pip; pin it with CONCORD_CPU_TORCH"
  "$PY" "$ROOT/installers/torchvision_cpu.py"
fi
T_ENV=$(now)

# 3. PyInstaller ---------------------------------------------------------------------
step "PyInstaller: $ROOT/installers/concord.spec"
rm -rf "$DIST/concord"
(cd "$OUT" && "$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
    --distpath "$DIST" --workpath "$WORK" "$ROOT/installers/concord.spec")
APP=$DIST/concord
[[ -x $APP/concord ]] || die "PyInstaller did not produce $APP/concord"
# Files keep their source modes; every user of the machine must read them.
chmod -R u+rwX,go+rX,go-w "$APP"
T_PYI=$(now)

# 4. the archive ----------------------------------------------------------------------
VERSION=$("$PY" -c 'import importlib.metadata as m; print(m.version("concord"))')
ARCH=$(uname -m)
TARBALL=$OUT/concord-$VERSION-linux-$ARCH-$VARIANT.tar.gz
rm -f "$TARBALL"
if [[ $ARCHIVE == 1 ]]; then
  step "archive: $TARBALL"
  tar -C "$DIST" -cf - concord | gzip -6 > "$TARBALL"
fi
T_END=$(now)

# 5. what was built -----------------------------------------------------------------
FOLDER_SIZE=$(du -sh "$APP" | cut -f1)
FOLDER_BYTES=$(du -sb "$APP" | cut -f1)
ARCHIVE_SIZE=-
ARCHIVE_BYTES=-
if [[ -f $TARBALL ]]; then
  ARCHIVE_SIZE=$(du -h "$TARBALL" | cut -f1)
  ARCHIVE_BYTES=$(stat -c %s "$TARBALL")
fi
TORCH=$("$PY" -c 'import importlib.metadata as m; print(m.version("torch"))')
TORCHVISION=$("$PY" -c 'import importlib.metadata as m; print(m.version("torchvision"))')
PYI=$("$PY" -c 'import importlib.metadata as m; print(m.version("pyinstaller"))')
VENV_SIZE=$(du -sh "$VENV" | cut -f1)
cat > "$OUT/build-info.txt" <<EOF
variant=$VARIANT
version=$VERSION
python=$("$PY" -c 'import platform; print(platform.python_version())')
torch=$TORCH
torchvision=$TORCHVISION
pyinstaller=$PYI
app=$APP/concord
archive=$([[ -f $TARBALL ]] && echo "$TARBALL" || echo -)
environment_seconds=$(secs "$T0" "$T_ENV")
pyinstaller_seconds=$(secs "$T_ENV" "$T_PYI")
archive_seconds=$(secs "$T_PYI" "$T_END")
build_seconds=$(secs "$T0" "$T_END")
folder_size=$FOLDER_SIZE
folder_bytes=$FOLDER_BYTES
archive_size=$ARCHIVE_SIZE
archive_bytes=$ARCHIVE_BYTES
venv_size=$VENV_SIZE
EOF
step "done"
cat "$OUT/build-info.txt"
