"""HTTPS against a real SeaweedFS serving TLS with a test CA (testbed.tls), on both HTTP paths.

The AWS CLI and botocore trust the CA bundle named by AWS_CA_BUNDLE (or a profile's
`ca_bundle`) instead of their bundled one (https://docs.aws.amazon.com/cli/latest/userguide/
cli-configure-files.html#cli-configure-files-global; aws/aws-cli#3296: CERTIFICATE_VERIFY_FAILED
until it names the right CA). Every real endpoint is HTTPS: copy with history, resume after
SIGKILL, verify and the fault mix run over TLS here; an untrusted certificate, a missing or
unreadable AWS_CA_BUNDLE and a hostname mismatch are refused in one line, exit 2, nothing written.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from backfill.seaweed import seaweed_server
from testbed.faults import Fault
from testbed.gate import Gate
from testbed.outage import wait_until
from testbed.proxy import ThreadedProxy
from testbed.seeds import seed_histories, seed_many
from testbed.store import assert_exact_replica, copied_versions, run_cli, shape, start_cli
from testbed.tls import HTTP_PATHS, LocalCA, TlsBed, plain_store, tls_store


@pytest.fixture(scope="module")
def tls_bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBed]:
    root = tmp_path_factory.mktemp("tls")
    ca = LocalCA.create(root / "ca")
    with seaweed_server(root / "seaweed", tls=ca.server) as server:
        yield TlsBed(server, ca, tls_store(server.info, ca), plain_store(server.info))


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("backfill: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("http", HTTP_PATHS)
def test_copy_with_history_and_verify_over_tls(tls_bed: TlsBed, manifest: str, http: str) -> None:
    s = tls_bed.https
    src, dst = s.buckets()
    counts = seed_histories(s, src, 80, seed=5)
    r = s.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json", "--http", http)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["job"]["copied"] == counts["versions"] + counts["delete_markers"]
    assert shape(s.history(src)) == shape(s.history(dst))
    v = s.run("verify", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--http", http)
    assert v.code == 0, v.stderr
    v = s.run("verify", f"s3://{src}", f"s3://{dst}", "--http", http)  # listing both sides, no manifest
    assert v.code == 0, v.stderr


@pytest.mark.parametrize("http", HTTP_PATHS)
def test_sigkill_then_resume_over_tls(tls_bed: TlsBed, manifest: str, http: str) -> None:
    s = tls_bed.https
    src, dst = s.buckets()
    total = seed_many(tls_bed.plain, src, 900)
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--concurrency", "8", "--http", http]
    p = start_cli(s, *args)
    try:
        wait_until(lambda: copied_versions(manifest) >= 200 or p.poll() is not None)
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    assert p.returncode == -signal.SIGKILL, "the copy finished before it could be killed: seed more keys"
    r = s.run(*args, "--json")
    assert r.code == 0, r.stderr
    job = json.loads(r.stdout)["job"]
    assert job["copied"] == total and job["failed"] == 0
    assert_exact_replica(tls_bed.plain, src, dst)


@pytest.mark.parametrize("http", HTTP_PATHS)
def test_injected_faults_over_tls(tls_bed: TlsBed, manifest: str, http: str) -> None:
    """The fault mix of test_faults.py, between a TLS terminator (the gate) and the server."""
    s = tls_bed.https
    src, dst = s.buckets()
    counts = seed_histories(tls_bed.plain, src, 300, seed=9)
    faults = [
        Fault("slowdown", 0.05),
        Fault("internal_error", 0.02),
        Fault("reset", 0.02),
        Fault("reset_after", 0.02),
        Fault("stall", 0.01, seconds=3.0),
        Fault("error_200", 0.02),
    ]
    with (
        ThreadedProxy(tls_bed.plain.endpoint, faults=faults, seed=4) as proxy,
        Gate(proxy.endpoint_url, tls=tls_bed.ca.server) as gate,
    ):
        r = s.copy_via(gate.endpoint_url, src, dst, manifest, "--read-timeout", "2", "--http", http)
        stats = proxy.stats
    assert r.code == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert stats.get("reset", 0) and stats.get("reset_after", 0) and stats.get("slowdown", 0), stats
    job = json.loads(r.stdout)["job"]
    assert job["copied"] == counts["versions"] + counts["delete_markers"] and job["failed"] == 0
    assert_exact_replica(tls_bed.plain, src, dst)


def _refusal_cases(bed: TlsBed, tmp: Path) -> dict[str, tuple[dict[str, str], str]]:
    """name → (environment, a word the one line must contain besides 'certificate' and AWS_CA_BUNDLE)."""
    directory = tmp / "a-directory.pem"
    directory.mkdir()
    garbage = tmp / "garbage.pem"
    garbage.write_text("this is no certificate\n")
    mismatch = bed.server.info.https_url.replace("localhost", "127.0.0.1")
    return {
        # No AWS_CA_BUNDLE: the test CA is not in the default trust store.
        "untrusted": ({"AWS_CA_BUNDLE": ""}, "trust"),
        # A bundle of another CA: the server's certificate does not chain to it.
        "other-ca": ({"AWS_CA_BUNDLE": str(bed.ca.stranger)}, "trust"),
        "missing-bundle": ({"AWS_CA_BUNDLE": str(tmp / "no-such-ca.pem")}, "no-such-ca.pem"),
        "unreadable-bundle": ({"AWS_CA_BUNDLE": str(directory)}, "a-directory.pem"),
        "not-a-bundle": ({"AWS_CA_BUNDLE": str(garbage)}, "garbage.pem"),
        # The certificate names localhost; the endpoint is 127.0.0.1.
        "hostname-mismatch": ({"AWS_ENDPOINT_URL": mismatch}, "127.0.0.1"),
    }


CASES = ["untrusted", "other-ca", "missing-bundle", "unreadable-bundle", "not-a-bundle", "hostname-mismatch"]


@pytest.mark.parametrize("http", HTTP_PATHS)
@pytest.mark.parametrize("case", CASES)
def test_certificate_problems_are_one_line_and_write_nothing(
    tls_bed: TlsBed, tmp_path: Path, manifest: str, case: str, http: str
) -> None:
    s = tls_bed.https
    src, dst = s.buckets()
    s.client.put_object(Bucket=src, Key="k", Body=b"v")
    env, word = _refusal_cases(tls_bed, tmp_path)[case]
    env = tls_bed.env(**env)
    if env.get("AWS_CA_BUNDLE") == "":
        del env["AWS_CA_BUNDLE"]
    # run_cli, not Store.run: the environment is exactly `env` (Store.run would add the CA bundle back).
    r = run_cli("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--http", http, env=env, timeout=120)
    assert r.code == 2, (r.code, r.stderr)
    line = _one_error_line(r.stderr)
    assert "certificate" in line.lower() and "AWS_CA_BUNDLE" in line and word in line, line
    assert not os.path.exists(manifest), "nothing may be written"
    assert s.history(dst) == {}
    v = run_cli("verify", f"s3://{src}", f"s3://{dst}", "--http", http, env=env, timeout=120)
    assert v.code == 2, (v.code, v.stderr)
    assert "AWS_CA_BUNDLE" in _one_error_line(v.stderr)


def test_no_secret_or_certificate_path_leaks_into_the_manifest(tls_bed: TlsBed, manifest: str) -> None:
    s = tls_bed.https
    src, dst = s.buckets()
    s.client.put_object(Bucket=src, Key="k", Body=b"v")
    assert s.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest).code == 0
    with sqlite3.connect(manifest) as db:
        dump = "\n".join(db.iterdump())
    assert tls_bed.https.env["AWS_SECRET_ACCESS_KEY"] not in dump


@pytest.mark.parametrize("no_proxy", [False, True])
def test_https_proxy_and_no_proxy_are_honoured(tls_bed: TlsBed, manifest: str, no_proxy: bool) -> None:
    """HTTPS_PROXY as the AWS CLI reads it (https://docs.aws.amazon.com/cli/latest/userguide/
    cli-configure-proxy.html): requests to an https endpoint go through the proxy (a CONNECT tunnel,
    TLS end to end), unless NO_PROXY names the host. With a proxy in the way the lean client steps
    aside and botocore carries every request; with NO_PROXY the lean path is used as usual."""
    from testbed.gate import ConnectProxy

    s = tls_bed.https
    src, dst = s.buckets()
    counts = seed_histories(tls_bed.plain, src, 30, seed=2)
    with ConnectProxy() as proxy:
        env = {"HTTPS_PROXY": proxy.url, "NO_PROXY": "localhost" if no_proxy else ""}
        r = s.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json", env=env)
        stats = proxy.stats
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["job"]["copied"] == counts["versions"] + counts["delete_markers"]
    if no_proxy:
        assert stats.get("tunnels", 0) == 0, stats
    else:
        assert stats.get("tunnels", 0) > 0, stats
        assert proxy.targets == {tls_bed.server.info.https_url.removeprefix("https://")}
    assert shape(s.history(src)) == shape(s.history(dst))
