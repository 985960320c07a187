#!/usr/bin/env python3
"""A hostile isolated worker for imhost's security tests.

The host starts it as IMHOST_PLUGIN_WORKER for an isolated plugin. It speaks the worker
protocol of rust/imhost-plugin-host/src/isolated.rs (hello on stdout; run requests as
SOCK_SEQPACKET packets with memfds on descriptor 3; alloc requests; done/failed) and misbehaves
in the way the plugin's file name says (libfake_<mode>.so):

  delete     names a file of the host's (FAKE_VICTIM) as its output, as the old protocol allowed
  huge       asks for an output of 2^50 voxels
  overflow   asks for 2^32 x 2^32 voxels
  longline   sends one endless line without a newline
  hang       never answers the run
  garbage    answers with lines that are not JSON, then exits
  bighello   a hello line far over the limit
"""
import array
import json
import os
import socket
import sys
import time

mode = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--plugin=")), "")
mode = mode.removeprefix("libfake_").removesuffix(".so")
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)


def say(message):
    out.write(json.dumps(message) + "\n")
    out.flush()


def endless_line():
    chunk = "x" * (1 << 20)
    try:
        while True:
            out.write(chunk)
            out.flush()
    except (BrokenPipeError, OSError):
        sys.exit(0)


MANIFEST = {
    "format": "imhost-manifest/1", "id": "fake." + mode, "name": "fake " + mode, "version": "0.0.1",
    "inputs": [{"name": "image", "dims": 3, "dtypes": ["f32"]}],
    "outputs": [{"name": "out", "kind": "map"}],
}

if mode == "bighello":
    endless_line()
say({"type": "hello", "plugin": "fake", "version": "0.0.1", "manifests": [MANIFEST]})
sock = socket.socket(fileno=3)


def receive():
    data, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(4 * array.array("i").itemsize))
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    return (json.loads(data) if data else None), list(fds)


def alloc(shape):
    say({"type": "alloc", "name": "out", "dtype": 5, "shape": shape})
    reply, _ = receive()
    return reply


while True:
    request, fds = receive()
    if request is None:
        break
    body = json.loads(os.pread(fds[0], os.fstat(fds[0]).st_size, 0))
    shape = body["inputs"][0]["shape"]
    if mode == "delete":
        victim = os.environ.get("FAKE_VICTIM", "/nonexistent")
        say({"type": "done", "outputs": [{"name": "out", "dtype": 5, "shape": shape, "file": victim}],
             "scores": {}, "report": None})
    elif mode in ("huge", "overflow"):
        asked = [1 << 50, 1, 1, 1] if mode == "huge" else [1 << 32, 1 << 32, 1, 1]
        reply = alloc(asked)
        say({"type": "failed", "kind": "model", "message": "the host answered: " + json.dumps(reply)})
    elif mode == "longline":
        endless_line()
    elif mode == "hang":
        time.sleep(3600)
    elif mode == "garbage":
        out.write("this is not JSON\n{\"type\": \n")
        out.flush()
        sys.exit(3)
    else:
        say({"type": "failed", "kind": "model", "message": "unknown fake mode " + mode})
