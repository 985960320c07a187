#!/usr/bin/env bash
# The Orthanc plugin and the OHIF extension, tested for real (ctest runs this):
#   1. node --test: the extension's logic;
#   2. a private network namespace (Orthanc 1.10 binds every interface): Debian's Orthanc with
#      DICOMweb and our plugin installed from BUILD (cmake --install), the command's DICOM CTP
#      phantom uploaded; test_orthanc_plugin.py (REST, jobs, results vs the command, security,
#      failures, cancel, restart, automatic runs), then test_ohif_viewer.py (the prebuilt OHIF
#      viewer, headless Chromium clicking "Generate perfusion maps").
#   run-tests.sh BUILD_DIR WORK
# Exits 77 (skipped) where Orthanc, Chromium or the viewer are not installed (scripts/setup.sh test).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="$1"
work="$2"
dist="$root/.cache/ohif/app-3.13.2/package/dist"
for need in /usr/sbin/Orthanc /usr/share/orthanc/plugins/libOrthancDicomWeb.so /usr/bin/chromium "$dist/index.html" \
            "$root/ohif-plugin/node_modules/puppeteer-core/package.json" "$build/ohif-plugin/libOrthancImhost.so"; do
  if [ ! -e "$need" ]; then
    echo "skipped: $need is missing (scripts/setup.sh test installs Orthanc, Chromium, the OHIF viewer and puppeteer-core)"
    exit 77
  fi
done
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null

echo "== node --test (the extension's logic)"
(cd "$root/ohif-plugin" && node --test extension/test/)

echo "== test data: the command's DICOM CTP phantom and its own results on it"
"$prefix/bin/imhost" phantom ctp --out "$work/phantom" --dicom -q
"$prefix/bin/imhost" run perfusion-osvd --input "$work/phantom/dicom" --out "$work/cli" --dicom-out "$work/cli-dicom" -q
# A moving study (small, so that registering its frames takes seconds): the plugin's ITK motion
# correction against the command's.
"$prefix/bin/imhost" phantom ctp --motion --size 64,64,8 --frames 30 --interval 2 --out "$work/moving" --dicom -q
"$prefix/bin/imhost" run perfusion-osvd --input "$work/moving/dicom" --out "$work/cli-moving" -q
mkdir -p "$work/ct-slice" "$work/plugins"
cp "$root/.cache/python/pydicom/data/test_files/CT_small.dcm" "$work/ct-slice/"
cp "$build/tests/plugins/libtest_crash.so" "$build/tests/plugins/libtest_hang.so" "$work/plugins/"
chmod 755 "$work/plugins"

export PYTHONPATH="$root/.cache/python"
echo "== Orthanc with the imhost plugin, then the OHIF viewer, in a private network namespace"
unshare -n bash -c "
  set -e
  ip link set lo up
  python3 '$here/test_orthanc_plugin.py' '$prefix' '$work/orthanc' '$work/phantom/dicom' '$work/cli' '$work/ct-slice' '$work/plugins' '$work/moving/dicom' '$work/cli-moving'
  NODE_PATH='$root/ohif-plugin/node_modules' python3 '$here/test_ohif_viewer.py' '$prefix' '$work/viewer' '$work/phantom/dicom' '$work/cli' '$dist'
"
echo "screenshots: $work/viewer/artefacts"
