#!/usr/bin/env bash
# Build the extension's Logic and tests against the real Slicer libraries from PyPI (the
# slicer-core / slicer-core-sdk wheels in .cache/slicer-venv, VTK 9.6.2 headers unpacked from
# ../shared/sdk by scripts/setup.sh test) and run them. Called by ctest (slicer_extension).
#   run-sdk-tests.sh IMHOST_BUILD_DIR WORK_DIR PLUGIN_DIR PACKAGES_DIR
# Exits 77 (ctest: skipped) with the reason when those inputs are absent (a clone without
# ../shared beside it).
set -euo pipefail
build=$1 work=$2 plugins=$3 packages=$4
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/.cache/slicer-venv"
site="$venv/lib/python3.11/site-packages"
vtk="$root/.cache/slicer-sdk/vtk-9.6.2-headers/vtk-build"
other="$root/.cache/torch-2.10.0-libs/torch/lib/libtorch_cpu.so"  # another PyTorch's LibTorch (setup.sh)
[ -f "$other" ] || other=""
if [ ! -f "$site/slicer_core_sdk/cmake/SlicerConfig.cmake" ] || [ ! -f "$vtk/lib/cmake/vtk/vtk-config.cmake" ]; then
  echo "skipped: the Slicer SDK is not set up (scripts/setup.sh test installs it where ../shared/sdk/vtk-9.6.2 exists)"
  exit 77
fi
mkdir -p "$work"
# The extension finds imhost through its installed CMake package, as it would in Slicer.
cmake --install "$build" --prefix "$work/prefix" >/dev/null
export PATH="$venv/bin:$PATH"
cmake -S "$root/slicer-extension" -B "$work/build" -G Ninja -DIMHOST_SLICER_SDK=ON -DCMAKE_BUILD_TYPE=Release \
  -DSlicer_DIR="$site/slicer_core_sdk/cmake" -DVTK_DIR="$vtk/lib/cmake/vtk" "-DCMAKE_PREFIX_PATH=$vtk;$work/prefix" \
  -DIMHOST_COMMAND="$work/prefix/bin/imhost" -DIMHOST_TEST_PLUGINS="$plugins" -DIMHOST_TEST_PACKAGES="$packages" \
  -DIMHOST_OTHER_LIBTORCH="$other" \
  -DPython3_EXECUTABLE="$venv/bin/python" >/dev/null
cmake --build "$work/build" -j "$(nproc)"
ctest --test-dir "$work/build" --output-on-failure
