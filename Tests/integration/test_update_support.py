"""Shared helpers for the test_update_* integration tests (no tests here).

The binary under test is $METEREXT_BIN (the Makefile sets it); it must have the `image` and `net` subcommands
from Sources/meterext/UpdateCommands.swift registered in its root command.
"""
import hashlib
import http.server
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))


def meterext_bin():
    path = os.environ.get("METEREXT_BIN", os.path.join(REPO, ".build", "debug", "meterext"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not built (set METEREXT_BIN or run `swift build`)")
    probe = subprocess.run([path, "image", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"{path} has no `image` subcommand: register ImageCommand and NetCommand in the root command")
    return path


def run(args, timeout=60, env=None):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


class Keys:
    def __init__(self, binary, root):
        self.dir = os.path.join(root, "keys")
        os.makedirs(self.dir)
        self.secret = os.path.join(root, "release.key")
        r = run([binary, "image", "keygen", "--out-secret", self.secret, "--out-public",
                 os.path.join(self.dir, "release.pub")])
        assert r.returncode == 0, r.stderr
        self.other_secret = os.path.join(root, "other.key")
        r = run([binary, "image", "keygen", "--out-secret", self.other_secret, "--out-public",
                 os.path.join(root, "other.pub")])
        assert r.returncode == 0, r.stderr


def host_arch():
    m = os.uname().machine
    return {"x86_64": "x86_64", "aarch64": "aarch64", "armv7l": "armv7"}.get(m, m)


def make_image(binary, secret, payload_path, version, out, arch=None, unsigned=False):
    args = [binary, "image", "sign", "--version", version, "--arch", arch or host_arch(),
            "--binary", payload_path, "--out", out]
    args += ["--unsigned"] if unsigned else ["--key", secret]
    r = run(args)
    assert r.returncode == 0, r.stderr
    return out


def flip_signature_byte(path):
    data = bytearray(open(path, "rb").read())
    header_len = struct.unpack_from("<H", data, 10)[0]
    data[header_len + 5] ^= 0x01
    open(path, "wb").write(bytes(data))


def write_script(path, body, padding=0):
    """A stand-in for the meterext binary: a shell script, optionally padded to make installs take longer."""
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\nexit 0\n")
        if padding:
            f.write("# " + os.urandom(padding).hex() + "\n")
    os.chmod(path, 0o755)
    return path


def slot_is_complete(slot_dir):
    """The invariant: a slot holds a binary whose size and SHA-512 match its manifest."""
    import json
    manifest = json.load(open(os.path.join(slot_dir, "slot.json")))
    data = open(os.path.join(slot_dir, "meterext"), "rb").read()
    return len(data) == manifest["size"] and hashlib.sha512(data).hexdigest() == manifest["sha512"] \
        and os.access(os.path.join(slot_dir, "meterext"), os.X_OK)


def make_ca(root):
    """A CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    d = os.path.join(root, "pki")
    os.makedirs(d)
    def ossl(*args):
        r = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=d)
        assert r.returncode == 0, r.stderr
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=meterext test CA")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
         "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other-ca.pem",
         "-days", "2", "-subj", "/CN=some other CA")
    return d


class Routes(http.server.BaseHTTPRequestHandler):
    """GET serves `files` (special paths: truncated, stalled, oversized); POST echoes or answers big/404."""
    files = {}
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        if path.startswith("/truncated/"):
            data = self.files[path[len("/truncated"):]]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if path.startswith("/stalled/"):
            data = self.files[path[len("/stalled"):]]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:100])
            self.wfile.flush()
            time.sleep(20)
            return
        if path == "/oversized.img":
            self.send_response(200)
            self.send_header("Content-Length", str(200 << 20))
            self.end_headers()
            try:
                for _ in range(200 * 16):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
            return
        if path == "/chunked-oversized.bin":  # no Content-Length: the cap must bite while streaming
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"x" * 65536)
            except OSError:
                pass
            return
        data = self.files.get(path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/big":
            reply, status = b"y" * 10000, 200
        elif self.path == "/missing":
            reply, status = b'{"error":"nope"}', 404
        else:
            reply = b'{"echo":' + body + b',"type":"' + self.headers.get("Content-Type", "").encode() + b'"}'
            status = 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class Servers:
    """An http and an https server on 127.0.0.1 sharing the same routes."""

    def __init__(self, pki):
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Routes)
        self.https = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Routes)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(pki, "server.pem"), os.path.join(pki, "server.key"))
        self.https.socket = ctx.wrap_socket(self.https.socket, server_side=True)
        for s in (self.http, self.https):
            s.daemon_threads = True
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def url(self, path, tls=False):
        server = self.https if tls else self.http
        return f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}{path}"

    def close(self):
        for s in (self.http, self.https):
            s.shutdown()
            s.server_close()
