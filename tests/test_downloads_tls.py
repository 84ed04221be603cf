"""HTTPS downloads pinned to the checked address still verify the certificate against the host name."""

from __future__ import annotations

import datetime
import http.server
import ssl
import threading

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infinitetalk_worker import downloads
from infinitetalk_worker.config import Settings
from infinitetalk_worker.errors import InputError


@pytest.fixture
def tls_server(tmp_path, monkeypatch):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            body = b"voice-bytes"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    original_init = requests.Session.__init__

    def trusting_init(self, *args, **kwargs):  # trust only the test's own certificate
        original_init(self, *args, **kwargs)
        self.verify = str(tmp_path / "cert.pem")

    monkeypatch.setattr(requests.Session, "__init__", trusting_init)
    monkeypatch.setattr(downloads, "check_public_url", lambda key, url, settings: ["127.0.0.1"])
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_pinned_https_download_keeps_sni_and_certificate_checks(tls_server, tmp_path):
    downloads.download_url("wav_url", f"https://localhost:{tls_server}/v.wav", tmp_path / "a.bin", Settings())
    assert (tmp_path / "a.bin").read_bytes() == b"voice-bytes"


def test_a_certificate_for_another_name_is_refused(tls_server, tmp_path):
    expected = f"wav_url: the download from 'https://127.0.0.1:{tls_server}/v.wav' failed: SSLError"
    with pytest.raises(InputError, match=expected):
        downloads.download_url("wav_url", f"https://127.0.0.1:{tls_server}/v.wav", tmp_path / "b.bin", Settings())
