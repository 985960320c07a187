#!/usr/bin/env bash
# Install what imhost needs on a fresh Debian 12 machine (with Rust and Python 3.11), and
# nothing that is already there. Safe to run again: every step checks before it acts, and a
# second run takes about a second.
#
#   scripts/setup.sh main   what building everything and running the main job needs
#   scripts/setup.sh test   that, plus the test oracle (nibabel) and nibabel's real NIfTI files
#
# Downloads are cached under .cache/ (ignored by git). Pinned versions live here.
set -euo pipefail
cd "$(dirname "$0")/.."

purpose="${1:-test}"
case "$purpose" in main | test) ;; *) echo "usage: $0 main|test" >&2; exit 2 ;; esac

NIBABEL_VERSION=5.4.2   # the oracle and the source of real NIfTI test files
NUMPY_VERSION=2.3.5
PYDICOM_VERSION=3.0.2   # DICOM oracle; its wheel carries real CT series (MIT)
HIGHDICOM_VERSION=0.28.2  # reads our Parametric Maps, SEGs and SRs back (MIT); with its pins:
PILLOW_VERSION=13.0.0
PYJPEGLS_VERSION=1.5.1
JSONSCHEMA_VERSION=4.26.0 # checks every shipped manifest against schemas/ (MIT); with its pins:
JSONSCHEMA_DEPS="attrs==26.1.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 typing-extensions==4.16.0"
TORCH_VERSION=2.11.0    # LibTorch for tch 0.24.0 (the version on the GPU machines)
SLICER_CORE_VERSION=5.13.31053.0  # Slicer's Qt-free libraries (MRML, module logics, ITK 5.4)
VTK_VERSION=9.6.2                 # the VTK those wheels are built with
OTHER_TORCH_VERSION=2.10.0        # "Slicer's own PyTorch" in the coexistence test: not ours
CACHE="$PWD/.cache"

say() { printf 'setup: %s\n' "$*"; }

# --- Debian packages ------------------------------------------------------------------------
# valgrind in both modes: the CMake build (which the main job also runs) configures the tests.
# libinsighttoolkit5-dev: ITK 5.2 for motion correction (the itk-sys crate builds against it).
# Install the Debian packages among "$@" that are missing; $1 says what they are for.
apt_install() {
  local why="$1" p missing=()
  shift
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  say "installing ${missing[*]}${why:+ ($why)}"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    $sudo apt-get update -qq
    $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
apt_install "" cmake g++ make pkg-config valgrind libinsighttoolkit5-dev

# --- Rust -----------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi

# --- LibTorch: the PyPI wheel, lean (no venv, no CUDA stack beyond what libtorch_cpu.so links) -
# .cargo/config.toml points LIBTORCH at .cache/torch-$TORCH_VERSION/torch; the binaries carry an
# rpath to its lib folder (rust/imhost-models/rpath.rs). See ../shared/notes/libtorch.md.
torch_dir="$CACHE/torch-$TORCH_VERSION"
if [ ! -f "$torch_dir/.imhost-complete" ]; then
  say "installing the LibTorch $TORCH_VERSION wheel into .cache/torch-$TORCH_VERSION (~1.2 GB)"
  rm -rf "$torch_dir"
  python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps --target "$torch_dir" \
    "torch==$TORCH_VERSION" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 2>&1 \
    | grep -v "WARNING: Running pip as the 'root' user" || true
  [ -f "$torch_dir/torch/lib/libtorch_cpu.so" ] && touch "$torch_dir/.imhost-complete"
fi
[ -f "$torch_dir/.imhost-complete" ] || { echo "setup: the LibTorch wheel did not install" >&2; exit 1; }

[ "$purpose" = main ] && exit 0

# --- Test-only Debian packages: dciodvfy (dicom3tools) validates every DICOM output; dcmtk
# compresses test series (JPEG lossless, JPEG-LS, RLE) for the decoders ----------------------
apt_install "DICOM validator, compressed test series" dicom3tools dcmtk

# --- Test oracle: nibabel in a private folder (no venv, nothing global) ----------------------
python_dir="$CACHE/python"
marker="$python_dir/.imhost-nibabel-$NIBABEL_VERSION-numpy-$NUMPY_VERSION"
if [ ! -f "$marker" ]; then
  say "installing nibabel $NIBABEL_VERSION and numpy $NUMPY_VERSION into .cache/python (test oracle)"
  rm -rf "$python_dir"
  python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir --target "$python_dir" \
    "nibabel==$NIBABEL_VERSION" "numpy==$NUMPY_VERSION" 2>&1 | grep -v "WARNING: Running pip as the 'root' user" || true
  PYTHONPATH="$python_dir" python3 -c "import nibabel, numpy" && touch "$marker"
fi

# --- DICOM oracle and real CT series: pydicom (its test files come inside the wheel) ---------
marker="$python_dir/.imhost-pydicom-$PYDICOM_VERSION"
if [ ! -f "$marker" ]; then
  say "installing pydicom $PYDICOM_VERSION into .cache/python (DICOM oracle and test series)"
  python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps --target "$python_dir" \
    "pydicom==$PYDICOM_VERSION" 2>&1 | grep -v "WARNING: Running pip as the 'root' user" || true
  [ -d "$python_dir/pydicom/data/test_files/dicomdirtests/98892001/CT5N" ] && touch "$marker"
fi

# --- highdicom: the independent reader of our DICOM results ----------------------------------
marker="$python_dir/.imhost-highdicom-$HIGHDICOM_VERSION"
if [ ! -f "$marker" ]; then
  say "installing highdicom $HIGHDICOM_VERSION into .cache/python (DICOM results oracle)"
  python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps --target "$python_dir" \
    "highdicom==$HIGHDICOM_VERSION" "pillow==$PILLOW_VERSION" "pyjpegls==$PYJPEGLS_VERSION" 2>&1 \
    | grep -v "WARNING: Running pip as the 'root' user" || true
  PYTHONPATH="$python_dir" python3 -c "import highdicom, PIL" && touch "$marker"
fi

# --- jsonschema: the independent validator of the manifest schema ---------------------------
marker="$python_dir/.imhost-jsonschema-$JSONSCHEMA_VERSION"
if [ ! -f "$marker" ]; then
  say "installing jsonschema $JSONSCHEMA_VERSION into .cache/python (manifest schema oracle)"
  # shellcheck disable=SC2086 # the pins are separate words
  python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps --target "$python_dir" \
    "jsonschema==$JSONSCHEMA_VERSION" $JSONSCHEMA_DEPS 2>&1 | grep -v "WARNING: Running pip as the 'root' user" || true
  PYTHONPATH="$python_dir" python3 -c "import jsonschema" && touch "$marker"
fi

# --- Real NIfTI test files from nibabel's wheel ----------------------------------------------
testdata="$CACHE/testdata/nibabel"
if [ ! -f "$testdata/.imhost-$NIBABEL_VERSION" ]; then
  say "fetching nibabel $NIBABEL_VERSION's NIfTI test files into .cache/testdata"
  mkdir -p "$CACHE/wheels" "$testdata"
  wheel="$CACHE/wheels/nibabel-$NIBABEL_VERSION-py3-none-any.whl"
  [ -f "$wheel" ] || python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --dest "$CACHE/wheels" "nibabel==$NIBABEL_VERSION"
  python3 - "$wheel" "$testdata" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("nibabel/tests/data/") and name.endswith((".nii", ".nii.gz")):
            with open(os.path.join(out, os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
PY
  touch "$testdata/.imhost-$NIBABEL_VERSION"
fi

# --- 3D Slicer's real libraries for the extension's tests: slicer-core + slicer-core-sdk (MRML,
# module logics, ITK 5.4) and their VTK in a venv, and VTK's C++ headers from ../shared/sdk
# (no registry has them). See ../shared/notes/slicer.md. Skipped where ../shared is absent. ---
vtk_sdk="$PWD/../shared/sdk/vtk-$VTK_VERSION"
if [ -x "$vtk_sdk/unpack.sh" ]; then
  venv="$CACHE/slicer-venv"
  marker="$venv/.imhost-slicer-$SLICER_CORE_VERSION-vtk-$VTK_VERSION"
  if [ ! -f "$marker" ]; then
    say "installing slicer-core $SLICER_CORE_VERSION, slicer-core-sdk and vtk $VTK_VERSION into .cache/slicer-venv (~1.3 GB)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "slicer-core==$SLICER_CORE_VERSION" \
      "slicer-core-sdk==$SLICER_CORE_VERSION" "vtk==$VTK_VERSION" ninja==1.13.2 pytest==9.2.0 \
      "nibabel==$NIBABEL_VERSION"
    "$venv/bin/python" -c "import slicer, vtk" && touch "$marker"
  fi
  site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  "$vtk_sdk/unpack.sh" "$CACHE/slicer-sdk" "$site" "$venv/bin/python" >/dev/null

  # Another PyTorch's LibTorch, as a Slicer with SlicerPyTorch has in its process: the extension's
  # test loads it before running the CNN (which must still work: libimhost never loads LibTorch).
  # Only the CPU libraries and the two CUDA runtime libraries they need are kept (~470 MB).
  other="$CACHE/torch-$OTHER_TORCH_VERSION-libs"
  if [ ! -f "$other/.imhost-complete" ]; then
    say "fetching LibTorch $OTHER_TORCH_VERSION's CPU libraries into .cache/torch-$OTHER_TORCH_VERSION-libs (Slicer coexistence test)"
    rm -rf "$other" "$CACHE/wheels/torch-$OTHER_TORCH_VERSION"
    mkdir -p "$other" "$CACHE/wheels/torch-$OTHER_TORCH_VERSION"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$CACHE/wheels/torch-$OTHER_TORCH_VERSION" \
      "torch==$OTHER_TORCH_VERSION" nvidia-cuda-runtime-cu12==12.8.90 nvidia-cuda-cupti-cu12==12.8.90
    python3 - "$CACHE/wheels/torch-$OTHER_TORCH_VERSION" "$other" <<'PY'
import glob, os, sys, zipfile
src, out = sys.argv[1], sys.argv[2]
keep = ("torch/lib/libc10.so", "torch/lib/libgomp.so.1", "torch/lib/libtorch_cpu.so",
        "nvidia/cuda_runtime/lib/libcudart.so.12", "nvidia/cuda_cupti/lib/libcupti.so.12")
for wheel in glob.glob(os.path.join(src, "*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name in keep:
                z.extract(name, out)
PY
    rm -rf "$CACHE/wheels/torch-$OTHER_TORCH_VERSION"
    [ -f "$other/torch/lib/libtorch_cpu.so" ] && [ -f "$other/nvidia/cuda_runtime/lib/libcudart.so.12" ] && touch "$other/.imhost-complete"
  fi
else
  say "../shared/sdk/vtk-$VTK_VERSION is absent: the 3D Slicer extension's tests will be skipped"
fi

# --- Orthanc and OHIF for the ohif-plugin tests: Debian's Orthanc 1.10 with its DICOMweb plugin
# and plugin SDK, nlohmann-json (the plugin's JSON), Chromium (the browser tests), iproute2 (the
# tests' private network namespace); the prebuilt OHIF viewer from npm (pinned) and
# puppeteer-core from ohif-plugin/package-lock.json. See ../shared/notes/orthanc-ohif.md. ------
apt_install "Orthanc plugin and OHIF tests" orthanc orthanc-dicomweb orthanc-dev nlohmann-json3-dev chromium iproute2
OHIF_VERSION=3.13.2
ohif="$CACHE/ohif/app-$OHIF_VERSION"
if [ ! -f "$ohif/.imhost-complete" ]; then
  say "fetching the prebuilt OHIF viewer @ohif/app@$OHIF_VERSION into .cache/ohif (~50 MB)"
  rm -rf "$ohif"
  mkdir -p "$ohif"
  (cd "$ohif" && npm pack --silent --cache "$CACHE/npm" "@ohif/app@$OHIF_VERSION" >/dev/null && tar xzf "ohif-app-$OHIF_VERSION.tgz" && rm "ohif-app-$OHIF_VERSION.tgz")
  [ -f "$ohif/package/dist/index.html" ] && touch "$ohif/.imhost-complete"
fi
[ -f "$ohif/.imhost-complete" ] || { echo "setup: the OHIF viewer did not install" >&2; exit 1; }
lock_hash=$(sha256sum ohif-plugin/package-lock.json | cut -c1-16)
if [ ! -f "ohif-plugin/node_modules/.imhost-$lock_hash" ]; then
  say "installing ohif-plugin's npm packages (puppeteer-core) from its lock file"
  (cd ohif-plugin && npm ci --silent --cache "$CACHE/npm" --no-audit --no-fund)
  touch "ohif-plugin/node_modules/.imhost-$lock_hash"
fi
