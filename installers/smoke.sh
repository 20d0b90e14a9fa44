#!/usr/bin/env bash
# Smoke test of the one-folder build (Linux): build it, then run it as a new user.
#
#   installers/smoke.sh [--variant cpu|gpu] [--out DIR] [--reuse] [--keep] [BUILD.SH OPTIONS...]
#
# Builds with installers/build.sh (same --variant / --out; other options are
# passed on), or with --reuse takes the build already in DIR/dist/concord.
# Then, with a fresh HOME and XDG_* folders (a first start: new database,
# migrations, demo import) and QT_QPA_PLATFORM=offscreen:
#
#   1. concord --version
#   2. concord check on a demo study with the bundled demo model (CLI, DICOM, model),
#      and on the same image as High-Throughput JPEG 2000, which only pylibjpeg's
#      entry-point plugins decode
#   3. concord --demo --screenshot FILE.png: exit status 0, a PNG of the window
#      that is not blank (checked with the build environment's Pillow when present)
#
# Prints the build time, folder size, archive size and the start-to-screenshot
# time; exits non-zero on the first failure.  The screenshot is kept as
# DIR/smoke-screenshot.png; --keep also keeps the throw-away home folder.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VARIANT=cpu
OUT=
REUSE=0
KEEP=0
PASS=()
TIMEOUT_S=${CONCORD_SMOKE_TIMEOUT:-300}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "smoke.sh: FAIL: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --variant) [[ $# -ge 2 ]] || die "--variant needs cpu or gpu"; VARIANT=$2; shift 2 ;;
    --variant=*) VARIANT=${1#*=}; shift ;;
    --out) [[ $# -ge 2 ]] || die "--out needs a folder"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --reuse) REUSE=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) PASS+=("$1"); shift ;;
  esac
done
[[ $VARIANT == cpu || $VARIANT == gpu ]] || die "--variant must be cpu or gpu, not '$VARIANT'"
OUT=${OUT:-${TMPDIR:-/tmp}/concord-installers/$VARIANT}
APP_DIR=$OUT/dist/concord
APP=$APP_DIR/concord

if [[ $REUSE == 1 && -x $APP ]]; then
  echo "smoke.sh: reusing $APP_DIR"
else
  [[ $REUSE == 1 ]] && echo "smoke.sh: no build in $APP_DIR; building"
  bash "$ROOT/installers/build.sh" --variant "$VARIANT" --out "$OUT" ${PASS[@]+"${PASS[@]}"}
fi
[[ -x $APP ]] || die "no program at $APP"
OUT=$(cd "$OUT" && pwd -P)

# A new user: nothing of this machine's user (settings, database, caches, keyring).
HOME_DIR=$(mktemp -d "${TMPDIR:-/tmp}/concord-smoke.XXXXXX")
cleanup() { [[ $KEEP == 1 ]] && echo "smoke.sh: kept $HOME_DIR" || rm -rf "$HOME_DIR"; }
trap cleanup EXIT
mkdir -p "$HOME_DIR/run" && chmod 700 "$HOME_DIR/run"
RUN=(env -u CONCORD_DATABASE_URL -u CONCORD_USER -u PYTHONPATH -u PYTHONHOME -u QT_PLUGIN_PATH
     -u LD_LIBRARY_PATH -u DISPLAY -u WAYLAND_DISPLAY -u GEMINI_API_KEY -u GOOGLE_API_KEY
     HOME="$HOME_DIR" XDG_CONFIG_HOME="$HOME_DIR/.config" XDG_DATA_HOME="$HOME_DIR/.local/share"
     XDG_CACHE_HOME="$HOME_DIR/.cache" XDG_STATE_HOME="$HOME_DIR/.local/state"
     XDG_RUNTIME_DIR="$HOME_DIR/run" QT_QPA_PLATFORM=offscreen CONCORD_NO_DIALOGS=1
     OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}")
cd "$HOME_DIR"  # nothing of the repository on the way
CHECKER=$OUT/venv/bin/python  # the build environment, for the checks around the program

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# 1. --version
echo "== concord --version"
"${RUN[@]}" timeout "$TIMEOUT_S" "$APP" --version || die "concord --version exited $?"

# 2. concord check on the first demo study (the bundled copy, not the repository's)
BUNDLE=$APP_DIR/_internal
[[ -d $BUNDLE/resources ]] || BUNDLE=$APP_DIR
STUDY=$BUNDLE/resources/demo/study-01
echo "== concord check $STUDY"
T=$(now)
set +e
"${RUN[@]}" timeout "$TIMEOUT_S" "$APP" check --model "$BUNDLE/resources/models/concord-tiny-demo" \
    --image "$STUDY"/dicom/*.dcm --report "$STUDY/draft.txt" > "$HOME_DIR/check.txt" 2>&1
CODE=$?
set -e
CHECK_S=$(secs "$T" "$(now)")
cat "$HOME_DIR/check.txt"
[[ $CODE == 0 ]] || die "concord check exited $CODE"
grep -q "^model " "$HOME_DIR/check.txt" || die "concord check printed no model line"

# 2b. pylibjpeg's plugins, which pydicom finds through entry points: study-01's JPEG 2000
# codestream relabelled High-Throughput JPEG 2000, a syntax no other bundled decoder claims.
if [[ -x $CHECKER ]] && "$CHECKER" -c 'import pydicom' 2>/dev/null; then
  "$CHECKER" - "$STUDY"/dicom/*.dcm "$HOME_DIR/htj2k.dcm" <<'EOF' || die "could not write the HTJ2K probe"
import sys
import pydicom
from pydicom.uid import UID
ds = pydicom.dcmread(sys.argv[1])
assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90", ds.file_meta.TransferSyntaxUID
ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.201")
ds.save_as(sys.argv[2], enforce_file_format=True)
EOF
  echo "== concord check (HTJ2K: pylibjpeg-openjpeg through its entry point)"
  "${RUN[@]}" timeout "$TIMEOUT_S" "$APP" check --model "$BUNDLE/resources/models/concord-tiny-demo" \
      --image "$HOME_DIR/htj2k.dcm" --report "$STUDY/draft.txt" > "$HOME_DIR/check-htj2k.txt" 2>&1 \
    || { cat "$HOME_DIR/check-htj2k.txt"; die "the HTJ2K image was not decoded"; }
  cmp -s <(grep -v '^model ' "$HOME_DIR/check.txt") <(grep -v '^model ' "$HOME_DIR/check-htj2k.txt") \
    || die "the HTJ2K image gave other flags than the JPEG 2000 original"
  echo "same flags as the JPEG 2000 original"
else
  echo "== (no pydicom in $OUT/venv: HTJ2K plugin check skipped)"
fi

# 3. the desktop application, offscreen, as a first start
SHOT=$HOME_DIR/screenshot.png
echo "== concord --demo --screenshot $SHOT"
T=$(now)
set +e
"${RUN[@]}" timeout "$TIMEOUT_S" "$APP" --demo --screenshot "$SHOT"
CODE=$?
set -e
SHOT_S=$(secs "$T" "$(now)")
[[ $CODE == 0 ]] || die "concord --demo --screenshot exited $CODE after ${SHOT_S} s"
[[ -s $SHOT ]] || die "no screenshot at $SHOT"
[[ $(head -c 8 "$SHOT" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] || die "$SHOT is not a PNG"
[[ -f $HOME_DIR/.local/share/Concord/demo.db ]] || die "the demo database is not in the new user's data folder"
cp "$SHOT" "$OUT/smoke-screenshot.png"

# Not blank: a real window has many colours and a spread of brightness.
if [[ -x $CHECKER ]] && "$CHECKER" -c 'import PIL' 2>/dev/null; then
  "$CHECKER" - "$SHOT" <<'EOF' || die "the screenshot looks blank"
import sys
from PIL import Image, ImageStat
im = Image.open(sys.argv[1]).convert("RGB")
w, h = im.size
colours = len(im.getcolors(1 << 24) or [])
spread = max(ImageStat.Stat(im.convert("L")).stddev[0], 0.0)
print(f"screenshot: {w} x {h} px, {colours} colours, brightness stddev {spread:.1f}")
sys.exit(0 if w >= 640 and h >= 400 and colours >= 256 and spread >= 10 else 1)
EOF
else
  echo "screenshot: $(stat -c %s "$SHOT") bytes (no Pillow to look inside)"
  [[ $(stat -c %s "$SHOT") -gt 20000 ]] || die "the screenshot is suspiciously small"
fi

# 4. a second start (database and demo already there)
T=$(now)
"${RUN[@]}" timeout "$TIMEOUT_S" "$APP" --demo --screenshot "$HOME_DIR/second.png" \
    || die "the second start exited $?"
SECOND_S=$(secs "$T" "$(now)")

INFO=$OUT/build-info.txt
get() { [[ -f $INFO ]] && sed -n "s/^$1=//p" "$INFO" || true; }
echo
echo "== smoke test passed ($VARIANT)"
echo "build time:             $(get build_seconds) s (environment $(get environment_seconds) s, PyInstaller $(get pyinstaller_seconds) s, archive $(get archive_seconds) s)"
echo "folder size:            $(du -sh "$APP_DIR" | cut -f1)  ($APP_DIR)"
echo "archive size:           $(get archive_size)  ($(get archive))"
echo "concord check:          $CHECK_S s"
echo "start to screenshot:    $SHOT_S s (first start: new database, demo import)"
echo "second start:           $SECOND_S s"
echo "screenshot:             $OUT/smoke-screenshot.png"
