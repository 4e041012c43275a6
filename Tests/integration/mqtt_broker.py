"""A real Mosquitto broker and subscriber for the fleet uplink tests (issue 16): started by the test itself on a free
loopback port with its own configuration, stopped and restarted at will, and a `mosquitto_sub` that records every
message (topic, payload, retained flag) to a file, with a persistent session so nothing published while it was
reconnecting is lost to the test."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, directory, tls=None, password_file=None, port=None, require_certificate=False):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.proc = None
        self.log = self.dir / "mosquitto.log"
        lines = [
            "user root",  # started by root in the test: stay root (the files are in the test's private folder)
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            f"log_dest file {self.log}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "max_queued_messages 100000",
        ]
        if password_file:
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
            if require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self):
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text() if self.log.exists() else ''}")
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # writes its persistence file
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def url(self, user=None):
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{user + '@' if user else ''}127.0.0.1:{self.port}"


class Subscriber:
    """`mosquitto_sub` with a persistent session (clean session off, QoS 1) writing `retained topic payload` lines."""

    def __init__(self, broker, topic, out, client_id, extra=()):
        self.broker, self.topic, self.out, self.client_id, self.extra = broker, topic, pathlib.Path(out), client_id, list(extra)
        self.proc = None

    def start(self):
        args = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.broker.port), "-q", "1", "-c", "-i", self.client_id,
                "-t", self.topic, "-F", "%r %t %p", *self.extra]
        if self.broker.tls:
            args += ["--cafile", str(self.broker.tls["ca"])]
        self.file = open(self.out, "a")
        self.proc = subprocess.Popen(args, stdout=self.file, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.5)  # subscribed (a persistent session keeps what follows)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None
        self.file.close()

    def messages(self):
        """[(retained, topic, payload-str)] in arrival order."""
        out = []
        if not self.out.exists():
            return out
        for line in self.out.read_text().splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3:
                out.append((parts[0] == "1", parts[1], parts[2]))
            elif len(parts) == 2:
                out.append((parts[0] == "1", parts[1], ""))
        return out

    def intervals(self):
        return [json.loads(p) for _, t, p in self.messages() if t.endswith("/interval")]


def publish(broker, topic, payload, retain=False):
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", topic, "-m", payload, "-q", "1"]
    if retain:
        args.append("-r")
    if broker.tls:
        args += ["--cafile", str(broker.tls["ca"])]
    subprocess.run(args, check=True, timeout=10)


def make_tls(directory, name="broker"):
    """A CA and a broker certificate for 127.0.0.1/localhost, made with openssl in the test's folder."""
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (d / f"{name}-{x}" for x in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=60)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", f"/CN=meterext test CA {name}")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = d / f"{name}-ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext))
    for p in (ca, cert, key):
        os.chmod(p, 0o644)
    return {"ca": ca, "cert": cert, "key": key}


def make_client_cert(tls, directory, cn="board-cert"):
    """A client certificate signed by the test CA of `make_tls`."""
    d = pathlib.Path(directory)
    key, csr, cert = d / f"{cn}.key", d / f"{cn}.csr", d / f"{cn}.pem"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=60)  # noqa: E731
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
    ca_key = pathlib.Path(str(tls["ca"]).replace("ca.pem", "ca.key"))
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(tls["ca"]), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2")
    for p in (key, cert):
        os.chmod(p, 0o644)
    return cert, key


def api(port, body, timeout=5):
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_for(predicate, timeout, what, step=0.2):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except OSError as e:
            last = e
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
