#!/usr/bin/env bash
# Fetches the shipping TT-Metal the tests run against: the ttnn 0.81.1 wheel from PyPI
# (about 100 MB, cached in target/ttnn-wheel/), and unpacks its C++ libraries
# (ttnn/build/lib: libtt_metal.so and what it links; ttnn.libs: the bundled MPI, hwloc,
# numa) and its runtime files (ttnn/tt_metal: descriptors, pre-compiled firmware; what
# mock mode needs). Prints the directory of libtt_metal.so. The wheel's Python extension needs
# Python 3.12 and is not used: tests link their own C++ programs against the library.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/ttnn-wheel
out=$dest/x
mkdir -p "$dest"
# Tests run it at the same time from several processes: one fetches and unpacks, the
# others wait for it.
exec 9>"$dest/.lock"
flock 9
if [ ! -e "$out/ttnn/build/lib/libtt_metal.so" ] || [ ! -d "$out/ttnn/tt_metal/soc_descriptors" ]; then
  py=python3
  if [ -n "${TTTRACK_TEST_VENV:-}" ] && [ -x "$TTTRACK_TEST_VENV/bin/python" ]; then
    py=$TTTRACK_TEST_VENV/bin/python
  fi
  mkdir -p "$dest"
  if ! ls "$dest"/ttnn-0.81.1-*.whl >/dev/null 2>&1; then
    echo "fetch-ttnn.sh: downloading the ttnn 0.81.1 wheel from PyPI into $dest" >&2
    "$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.12 --platform manylinux_2_34_x86_64 ttnn==0.81.1 -d "$dest" >&2
  fi
  "$py" - "$dest" "$out" <<'PY'
import glob, os, sys, zipfile
dest, out = sys.argv[1], sys.argv[2]
whl = sorted(glob.glob(os.path.join(dest, "ttnn-0.81.1-*.whl")))[0]
tmp = out + ".partial"
import shutil
shutil.rmtree(tmp, ignore_errors=True)
with zipfile.ZipFile(whl) as z:
    for m in z.infolist():
        if m.filename.startswith(("ttnn/build/lib/", "ttnn.libs/", "ttnn/tt_metal/")) and not m.is_dir():
            p = z.extract(m, tmp)
            os.chmod(p, 0o755)
import shutil
if os.path.exists(out):
    shutil.rmtree(out)
os.rename(tmp, out)
PY
fi
echo "$PWD/$out/ttnn/build/lib"
