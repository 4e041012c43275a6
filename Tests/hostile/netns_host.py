"""A test host in a network namespace: veth pair 10.213.0.1 (board side) <-> 10.213.0.2 (host), a python HTTP server
run inside the namespace with `ip netns exec`. 169.254.169.254 is put on the host's loopback and routed there, so even
a request that wrongly went out would land in this namespace (and be counted), never on a real metadata service."""
import json
import os
import random
import subprocess
import sys
import time

SERVER = r'''
import http.server, json, sys, threading
log_path, files_dir = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def record(self):
        with open(log_path, "a") as f:
            f.write(json.dumps({"host": self.server.server_address[0], "method": self.command, "path": self.path}) + "\n")
    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers: self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.record()
        if self.path.startswith("/redirect?to="):
            return self.reply(302, b"", [("Location", self.path[len("/redirect?to="):])])
        try:
            data = open(files_dir + "/" + self.path.strip("/").replace("/", "_"), "rb").read()
        except OSError:
            return self.reply(404)
        self.reply(200, data)
    def do_POST(self):
        self.record()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.startswith("/redirect?to="):
            return self.reply(307, b"", [("Location", self.path[len("/redirect?to="):])])
        self.reply(200, b'{"echo":' + json.dumps(body.decode()).encode() + b'}')
servers = [http.server.ThreadingHTTPServer((addr, int(port)), H) for addr, port in
           (a.split(":") for a in sys.argv[3:])]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("READY", flush=True)
servers[0].serve_forever()
'''


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check)


class NamespaceHost:
    BOARD = "10.213.0.1"
    HOST = "10.213.0.2"
    METADATA = "169.254.169.254"

    def __init__(self, root):
        tag = f"{os.getpid() % 10000}{random.randint(0, 99)}"
        self.ns = f"mxt-h{tag}"
        self.veth, self.peer = f"mxtb{tag}", f"mxth{tag}"
        self.root = root
        self.files = os.path.join(root, "files")
        os.makedirs(self.files, exist_ok=True)
        self.log = os.path.join(root, "host-requests.log")
        open(self.log, "w").close()
        self.server = None
        sh("ip", "netns", "add", self.ns)
        try:
            sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", self.peer)
            sh("ip", "link", "set", self.peer, "netns", self.ns)
            sh("ip", "addr", "add", f"{self.BOARD}/30", "dev", self.veth)
            sh("ip", "link", "set", self.veth, "up")
            inside = ["ip", "netns", "exec", self.ns]
            sh(*inside, "ip", "addr", "add", f"{self.HOST}/30", "dev", self.peer)
            sh(*inside, "ip", "link", "set", self.peer, "up")
            sh(*inside, "ip", "link", "set", "lo", "up")
            sh(*inside, "ip", "addr", "add", f"{self.METADATA}/32", "dev", "lo")
            # Anything sent to the metadata address goes into the namespace (the route goes with the veth).
            sh("ip", "route", "add", f"{self.METADATA}/32", "via", self.HOST, "dev", self.veth)
            script = os.path.join(root, "host_server.py")
            open(script, "w").write(SERVER)
            self.server = subprocess.Popen(
                [*inside, sys.executable, script, self.log, self.files, f"{self.HOST}:8080", f"{self.METADATA}:80"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = self.server.stdout.readline()
            assert "READY" in line, self.server.stderr.read()
        except BaseException:
            self.close()
            raise

    def url(self, path):
        return f"http://{self.HOST}:8080{path}"

    def add_file(self, name, data):
        with open(os.path.join(self.files, name), "wb") as f:
            f.write(data)

    def requests(self):
        return [json.loads(line) for line in open(self.log) if line.strip()]

    def close(self):
        if self.server and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(5)
            except subprocess.TimeoutExpired:
                self.server.kill()
        sh("ip", "link", "del", self.veth, check=False)
        sh("ip", "netns", "del", self.ns, check=False)
