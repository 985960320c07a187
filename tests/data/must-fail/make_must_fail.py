#!/usr/bin/env python3
"""Regenerate the must-fail NIfTI inputs in this folder (standard library only).

Each file is a small, hand-made lie: a valid-looking header with one thing wrong. The expected
error kind and a fragment of the message for each file are in expected.json, which the tests in
rust/imhost-core/tests/must_fail.rs, the CLI tests and the C test read. Run from anywhere:

    python3 tests/data/must-fail/make_must_fail.py
"""
import gzip
import json
import math
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def nifti1(dim=(3, 8, 8, 4), datatype=4, bitpix=16, pixdim=(1.0, 1.0, 1.0, 1.0, 0.0),
           vox_offset=352.0, scl=(1.0, 0.0), qform=1, sform=0, srow=None, magic=b"n+1\0",
           sizeof_hdr=348):
    """A little-endian NIfTI-1 header plus the 4-byte extension flag."""
    dims = list(dim) + [1] * (8 - len(dim))
    pix = list(pixdim) + [0.0] * (8 - len(pixdim))
    srow = srow or [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    h = bytearray(348)
    struct.pack_into("<i", h, 0, sizeof_hdr)
    struct.pack_into("<8h", h, 40, *dims)
    struct.pack_into("<hhh", h, 70, datatype, bitpix, 0)
    struct.pack_into("<8f", h, 76, *pix)
    struct.pack_into("<fff", h, 108, vox_offset, *scl)
    struct.pack_into("<B", h, 123, 10)  # xyzt_units: mm + s
    struct.pack_into("<hh", h, 252, qform, sform)
    struct.pack_into("<12f", h, 280, *[v for row in srow for v in row])
    h[344:348] = magic
    return bytes(h) + b"\0\0\0\0"


def nifti2(dim, datatype=64, bitpix=64):
    """A little-endian NIfTI-2 header (540 bytes) plus the extension flag."""
    h = bytearray(540)
    struct.pack_into("<i", h, 0, 540)
    h[4:12] = b"n+2\0\r\n\x1a\n"
    struct.pack_into("<hh", h, 12, datatype, bitpix)
    struct.pack_into("<8q", h, 16, *(list(dim) + [1] * (8 - len(dim))))
    struct.pack_into("<8d", h, 104, 1.0, 1.0, 1.0, 1.0, 1.0, 0, 0, 0)
    struct.pack_into("<q", h, 168, 544)
    struct.pack_into("<dd", h, 176, 1.0, 0.0)
    struct.pack_into("<ii", h, 344, 1, 0)
    struct.pack_into("<i", h, 500, 10)
    return bytes(h) + b"\0\0\0\0"


def voxels(n, size=2):
    return bytes((i * 7) % 251 for i in range(n * size))


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def main():
    expected = {}

    def case(name, data, kind, fragment):
        write(name, data)
        expected[name] = {"kind": kind, "contains": fragment}

    good = nifti1(dim=(4, 8, 8, 4, 5))
    full = good + voxels(8 * 8 * 4 * 5)

    case("empty.nii", b"", "format", "too short")
    case("not-nifti.nii", b"This is a text file, not an image.\n" * 20, "format", "not a NIfTI file")
    case("header-cut.nii", good[:200], "format", "inside the NIfTI header")
    case("truncated.nii", full[: len(full) // 2], "format", "truncated")
    gz = gzip.compress(full)
    case("truncated.nii.gz", gz[: len(gz) * 2 // 3], "format", "truncated")
    case("garbage.nii.gz", b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4, "format", "")
    # A plausible CTP header (512x512x16x89 int16, 746 MB) over 100 bytes of data: must fail
    # without allocating the claimed size.
    case("claims-more-than-file.nii.gz", gzip.compress(nifti1(dim=(4, 512, 512, 16, 89)) + voxels(50)),
         "format", "truncated")
    case("claims-more-than-file.nii", nifti1(dim=(4, 512, 512, 16, 89)) + voxels(50), "format", "truncated")
    # 32767^3 int16 = 70 TB: more than any machine's memory, without overflowing 64 bits.
    case("more-than-memory.nii", nifti1(dim=(3, 32767, 32767, 32767)), "too_large", "MiB")
    # 2^62 x 2^62 voxels: the voxel count overflows.
    case("overflowing-dims.nii", nifti2(dim=(3, 2 ** 62, 2 ** 62, 1)), "too_large", "overflow")
    case("nan-spacing.nii", nifti1(pixdim=(1.0, float("nan"), 1.0, 1.0)) + voxels(256), "geometry", "pixdim[1]")
    case("zero-spacing.nii", nifti1(pixdim=(1.0, 1.0, 0.0, 1.0)) + voxels(256), "geometry", "pixdim[2]")
    case("inf-sform.nii", nifti1(qform=0, sform=1, srow=[[1, 0, 0, math.inf], [0, 1, 0, 0], [0, 0, 1, 0]]) + voxels(256),
         "geometry", "sform")
    case("singular-sform.nii", nifti1(qform=0, sform=1, srow=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]) + voxels(256),
         "geometry", "sform")
    case("zero-dim.nii", nifti1(dim=(3, 8, 0, 4)), "shape", "dim[2] = 0")
    case("negative-dim.nii", nifti1(dim=(3, 8, 8, -4)), "shape", "dim[3] = -4")
    case("zero-rank.nii", nifti1(dim=(0, 8, 8, 4)), "format", "dim[0] = 0")
    case("five-d.nii", nifti1(dim=(5, 4, 4, 4, 2, 3)) + voxels(384), "unsupported", "dim[5] = 3")
    case("bad-magic.nii", nifti1(magic=b"xyz\0") + voxels(256), "format", "bad magic")
    case("header-pair.nii", nifti1(magic=b"ni1\0", vox_offset=0.0), "unsupported", ".hdr/.img")
    case("unknown-datatype.nii", nifti1(datatype=999) + voxels(256), "format", "datatype code 999")
    case("complex.nii", nifti1(datatype=32, bitpix=64) + voxels(256, 8), "unsupported", "complex")
    case("bitpix-mismatch.nii", nifti1(bitpix=8) + voxels(256), "format", "bitpix")
    case("vox-offset-inside-header.nii", nifti1(vox_offset=100.0) + voxels(256), "format", "vox_offset")
    case("fractional-vox-offset.nii", nifti1(vox_offset=352.5) + voxels(256), "format", "vox_offset")
    case("infinite-scaling.nii", nifti1(scl=(math.inf, 0.0)) + voxels(256), "format", "scl_slope")

    # Frame times that contradict the image.
    write("sidecar-count.nii", full)
    write("sidecar-count.json", json.dumps({"FrameTimes": [0, 1, 2]}).encode())
    expected["sidecar-count.nii"] = {"kind": "format", "contains": "3 frame times but the image has 5 frames"}
    write("sidecar-decreasing.nii", full)
    write("sidecar-decreasing.json", json.dumps({"FrameTimes": [0, 1, 3, 2, 4]}).encode())
    expected["sidecar-decreasing.nii"] = {"kind": "geometry", "contains": "increase"}
    write("sidecar-not-json.nii", full)
    write("sidecar-not-json.json", b"{FrameTimes: [0, 1")
    expected["sidecar-not-json.nii"] = {"kind": "format", "contains": "not valid JSON"}

    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
