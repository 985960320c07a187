#!/usr/bin/env bash
# Install imhost from the build tree into a fresh prefix, build a tiny host project against it
# with find_package(imhost CONFIG), and run it. Usage: run.sh BUILD_DIR WORK_DIR PLUGIN.so
set -euo pipefail
build=$1 work=$2 plugin=$3
here="$(cd "$(dirname "$0")" && pwd)"
rm -rf "$work"
mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$here" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer_c" "$plugin"
test -f "$work/prefix/share/imhost/models/perfusion-cnn/manifest.json"
"$work/build/consumer_cpp" "$work/prefix/share/imhost/models/perfusion-cnn"
"$work/prefix/bin/imhost" --version
