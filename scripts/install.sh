#!/bin/sh
# Installs pretext and the two TensorFlow libraries it links under PREFIX/bin and PREFIX/lib, with
# a RUNPATH relative to the binary ($ORIGIN/../lib): the tree can be moved or copied anywhere and
# needs nothing from the checkout it was built in.
#
#   scripts/install.sh BINARY TF_LIB_DIR PREFIX PATCHELF
set -eu
if [ $# -ne 4 ]; then
  echo "usage: $0 BINARY TF_LIB_DIR PREFIX PATCHELF" >&2
  exit 2
fi
bin=$1 tflib=$2 prefix=$3 patchelf=$4
for f in "$bin" "$tflib/libtensorflow_cc.so.2" "$tflib/libtensorflow_framework.so.2" "$patchelf"; do
  [ -f "$f" ] || { echo "error: $f: not found (run \`make build\` first)" >&2; exit 2; }
done
mkdir -p "$prefix/bin" "$prefix/lib"
# Copy to a temporary name, patch, then rename: an interrupted install leaves no half binary.
cp "$bin" "$prefix/bin/.pretext.tmp"
"$patchelf" --set-rpath '$ORIGIN/../lib' "$prefix/bin/.pretext.tmp"
for lib in libtensorflow_cc.so.2 libtensorflow_framework.so.2; do
  cp "$tflib/$lib" "$prefix/lib/.$lib.tmp"
  mv -f "$prefix/lib/.$lib.tmp" "$prefix/lib/$lib"
done
mv -f "$prefix/bin/.pretext.tmp" "$prefix/bin/pretext"
echo "installed $prefix/bin/pretext (RUNPATH \$ORIGIN/../lib) and TensorFlow's C library in $prefix/lib"
