"""firmware_update, download_file and request_post against local http and https servers, through the same code
the /api commands use (`meterext image install URL`, `meterext net download|post`)."""
import hashlib
import json
import os
import shutil

import pytest

from test_update_support import (Keys, Routes, Servers, flip_signature_byte, make_ca, make_image, meterext_bin,
                                 run, slot_is_complete, write_script)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("update"))
    binary = meterext_bin()
    keys = Keys(binary, root)
    pki = make_ca(root)
    certs = os.path.join(root, "certs")
    os.makedirs(certs)
    shutil.copy(os.path.join(pki, "ca.pem"), os.path.join(certs, "ca_cert.pem"))
    shutil.copy(os.path.join(pki, "other-ca.pem"), os.path.join(certs, "other.pem"))
    payload = write_script(os.path.join(root, "payload.sh"), "echo v2", padding=200_000)
    imgs = {}
    imgs["good"] = make_image(binary, keys.secret, payload, "2.0.0", os.path.join(root, "good.img"))
    imgs["wrongsig"] = make_image(binary, keys.secret, payload, "2.0.0", os.path.join(root, "wrongsig.img"))
    flip_signature_byte(imgs["wrongsig"])
    imgs["otherkey"] = make_image(binary, keys.other_secret, payload, "2.0.0", os.path.join(root, "otherkey.img"))
    imgs["wrongarch"] = make_image(binary, keys.secret, payload, "2.0.0", os.path.join(root, "wrongarch.img"),
                                   arch="armv7" if os.uname().machine != "armv7l" else "aarch64")
    imgs["unsigned"] = make_image(binary, None, payload, "2.0.1", os.path.join(root, "unsigned.img"), unsigned=True)
    Routes.files = {"/" + os.path.basename(p): open(p, "rb").read() for p in imgs.values()}
    Routes.files["/test.txt"] = b"hello from the test server\n"
    servers = Servers(pki)
    yield dict(root=root, bin=binary, keys=keys, certs=certs, servers=servers, payload=payload)
    servers.close()


def fresh_state(env, name):
    state = os.path.join(env["root"], "state-" + name)
    os.makedirs(state)
    with open(os.path.join(state, "config.json"), "w") as f:
        f.write('{"version": 3, "wifi": {"ssid": "x"}}')
    return state


def install(env, state, url, *extra):
    return run([env["bin"], "image", "install", "--state-dir", state, "--keys", env["keys"].dir,
                "--cert-dir", env["certs"], "--stall-seconds", "2", "--max-bytes", str(8 << 20),
                # The test servers are on loopback, which the board refuses by default (tests/hostile/test_outgoing).
                "--allow-local-addresses", *extra, url])


def assert_nothing_switched(state):
    assert not os.path.lexists(os.path.join(state, "firmware", "current"))
    assert open(os.path.join(state, "config.json")).read() == '{"version": 3, "wifi": {"ssid": "x"}}'


@pytest.mark.parametrize("tls", [False, True])
def test_good_image_is_installed_in_a_slot_and_switched(env, tls):
    state = fresh_state(env, f"good-{tls}")
    r = install(env, state, env["servers"].url("/good.img", tls))
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["state"] == "installed" and status["version"] == "2.0.0"
    assert status["bytes"] == os.path.getsize(os.path.join(env["root"], "good.img"))
    current = os.path.join(state, "firmware", "current")
    assert os.readlink(current).startswith("slots/2.0.0-")
    assert slot_is_complete(os.path.realpath(current))
    assert open(os.path.join(current, "meterext"), "rb").read() == open(env["payload"], "rb").read()
    trial = json.load(open(os.path.join(state, "firmware", "trial.json")))
    assert trial["attempts"] == 0 and trial["slot"] == os.path.basename(os.readlink(current))
    assert os.listdir(os.path.join(state, "firmware", "incoming")) == []


@pytest.mark.parametrize("path,code", [
    ("/truncated/good.img", "truncated"),
    ("/wrongsig.img", "bad_signature"),
    ("/otherkey.img", "unknown_key"),
    ("/wrongarch.img", "wrong_architecture"),
    ("/unsigned.img", "unsigned_image"),
    ("/oversized.img", "too_large"),
    ("/stalled/good.img", "stalled"),
    ("/nothing-here.img", "http_status"),
])
def test_bad_images_are_refused_with_the_reason_and_nothing_switches(env, path, code):
    state = fresh_state(env, "bad-" + path.strip("/").replace("/", "-"))
    r = install(env, state, env["servers"].url(path))
    assert r.returncode == 1, r.stdout
    status = json.loads(r.stdout)
    assert status["state"] == "failed"
    assert status["last_error"]["code"] == code, status
    assert status["last_error"]["message"]
    assert_nothing_switched(state)


def test_unsigned_image_only_with_allow_unsigned_and_loudly(env):
    state = fresh_state(env, "unsigned-dev")
    r = install(env, state, env["servers"].url("/unsigned.img"), "--allow-unsigned")
    assert r.returncode == 0, r.stderr
    assert "UNSIGNED" in r.stderr
    assert os.path.lexists(os.path.join(state, "firmware", "current"))


def test_https_with_the_wrong_ca_or_a_missing_ca_is_a_clear_error(env):
    state = fresh_state(env, "tls")
    r = install(env, state, env["servers"].url("/good.img", tls=True), "--cert", "other.pem")
    assert r.returncode == 1
    assert json.loads(r.stdout)["last_error"]["code"] == "tls_error"
    r = install(env, state, env["servers"].url("/good.img", tls=True), "--cert", "absent.pem")
    assert r.returncode == 1 and "cert_missing" in r.stderr and "absent.pem" in r.stderr
    r = install(env, state, env["servers"].url("/good.img", tls=True), "--cert", "../pki/ca.pem")
    assert r.returncode == 1 and "bad_cert" in r.stderr
    assert_nothing_switched(state)


def net(env, state, *args):
    return run([env["bin"], "net", *args[:1], "--state-dir", state, "--cert-dir", env["certs"],
                "--max-bytes", str(1 << 20), "--stall-seconds", "2", "--allow-local-addresses", *args[1:]])


def test_download_file_stores_under_a_safe_name_without_overwriting(env):
    state = fresh_state(env, "download")
    expected = Routes.files["/test.txt"]
    names = []
    for tls in (False, True):
        r = net(env, state, "download", env["servers"].url("/test.txt", tls))
        assert r.returncode == 0, r.stderr
        reply = json.loads(r.stdout)
        assert reply["size"] == len(expected)
        assert reply["sha256"] == hashlib.sha256(expected).hexdigest()
        names.append(reply["name"])
    assert names == ["test.txt", "test-1.txt"]
    for name in names:
        assert open(os.path.join(state, "downloads", name), "rb").read() == expected
    r = net(env, state, "download", env["servers"].url("/test.txt?x=/../../etc/passwd", tls=True),
            "--cert", "other.pem")
    assert r.returncode == 1 and "tls_error" in r.stderr
    r = net(env, state, "download", env["servers"].url("/chunked-oversized.bin"))
    assert r.returncode == 1 and "too_large" in r.stderr
    r = net(env, state, "download", env["servers"].url("/truncated/test.txt"))
    assert r.returncode == 1 and "truncated" in r.stderr
    assert sorted(os.listdir(os.path.join(state, "downloads"))) == sorted(names), "failed downloads leave nothing behind"


def test_request_post_relays_status_and_a_capped_body(env):
    state = fresh_state(env, "post")
    r = net(env, state, "post", env["servers"].url("/api", tls=True), '{"cmd":"meter_reading"}')
    assert r.returncode == 0, r.stderr
    reply = json.loads(r.stdout)
    assert reply["status"] == 200 and reply["truncated"] is False
    assert json.loads(reply["body"]) == {"echo": {"cmd": "meter_reading"}, "type": "application/json"}
    r = net(env, state, "post", env["servers"].url("/big"), "x")
    reply = json.loads(r.stdout)
    assert reply["status"] == 200 and reply["truncated"] is True and reply["body"] == "y" * 4096
    r = net(env, state, "post", env["servers"].url("/missing"), "x")
    assert json.loads(r.stdout)["status"] == 404
    r = net(env, state, "post", env["servers"].url("/api", tls=True), "x", "--cert", "other.pem")
    assert r.returncode == 1 and "tls_error" in r.stderr
