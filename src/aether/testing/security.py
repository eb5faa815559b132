"""Credentials for testing secured NATS servers: TLS certificates, NKeys, and JWT ``.creds`` files.

Everything is generated on the fly into a folder, never checked in. Needs the ``cryptography`` and
``nkeys`` packages (both in the ``dev`` extra).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["JwtAccount", "TlsFiles", "make_jwt_setup", "make_nkey_user", "make_tls_files"]


@dataclass(frozen=True)
class TlsFiles:
    """Paths of a test PKI: a CA, a server certificate for 127.0.0.1/localhost, a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_config(self, *, verify: bool = True) -> str:
        """The ``tls { }`` block for a nats-server configuration (``verify``: require client certs)."""
        return (f"tls {{ cert_file: {json.dumps(str(self.server_cert))}, key_file: {json.dumps(str(self.server_key))}, "
                f"ca_file: {json.dumps(str(self.ca))}, verify: {'true' if verify else 'false'}, timeout: 5 }}")


def make_tls_files(folder: str | os.PathLike[str]) -> TlsFiles:
    """Create a CA, a server certificate (127.0.0.1, localhost) and a client certificate in ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(path: Path, k: ec.EllipticCurvePrivateKey) -> None:
        path.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))

    # Python 3.13's default context sets VERIFY_X509_STRICT: certificates need key identifiers,
    # basic constraints and (for the CA) key usage, as RFC 5280 asks
    ca_key = key()
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (x509.CertificateBuilder().subject_name(name("aether-test-ca")).issuer_name(name("aether-test-ca"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=True, crl_sign=True, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(ca_ski, critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))
    ca_aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)

    def leaf(cn: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> tuple[Any, Any]:
        k = key()
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
                   .public_key(k.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False,
                                                key_agreement=True, key_cert_sign=False, crl_sign=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
                   .add_extension(ca_aki, critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), k

    server_cert, server_key = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                                   [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_cert, client_key = leaf("aether-client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    files = TlsFiles(out / "ca.pem", out / "server.pem", out / "server-key.pem", out / "client.pem",
                     out / "client-key.pem")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    write_key(files.server_key, server_key)
    files.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    write_key(files.client_key, client_key)
    return files


def make_nkey_user() -> tuple[str, str]:
    """A new user NKey: ``(seed, public_key)``."""
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), nkeys.from_seed(seed).public_key.decode()


def _keypair(prefix: int) -> Any:
    import nkeys

    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt(claims: dict[str, Any], signer: Any) -> str:
    claims = {"iat": int(time.time()), **claims}
    body = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    claims["jti"] = base64.b32encode(hashlib.sha256(body).digest()).decode().rstrip("=")
    segments = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode()) + "." + _b64(
        json.dumps(claims, separators=(",", ":")).encode())
    return segments + "." + _b64(signer.sign(segments.encode()))


@dataclass(frozen=True)
class JwtAccount:
    """An account of a JWT (operator mode) setup: its public key and signing key pair."""

    public_key: str
    keypair: Any

    def creds(self, folder: str | os.PathLike[str], user: str, *, pub_allow: list[str] | None = None,
              sub_allow: list[str] | None = None) -> Path:
        """Write a ``.creds`` file for a new user of this account (optionally with permissions)."""
        import nkeys

        user_kp = _keypair(nkeys.PREFIX_BYTE_USER)
        user_pub = user_kp.public_key.decode()
        perms: dict[str, Any] = {"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1}
        if pub_allow is not None:
            perms["pub"] = {"allow": pub_allow}
        if sub_allow is not None:
            perms["sub"] = {"allow": sub_allow}
        token = _jwt({"iss": self.public_key, "sub": user_pub, "name": user, "nats": perms}, self.keypair)
        path = Path(folder) / f"{user}.creds"
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n" + token + "\n------END NATS USER JWT------\n\n"
            "-----BEGIN USER NKEY SEED-----\n" + user_kp.seed.decode() + "\n------END USER NKEY SEED------\n"
        )
        return path


def make_jwt_setup(account_names: list[str]) -> tuple[str, dict[str, JwtAccount]]:
    """An operator with JetStream-enabled accounts: ``(server_config_text, {name: JwtAccount})``."""
    import nkeys

    operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    op_pub = operator.public_key.decode()
    op_jwt = _jwt({"iss": op_pub, "sub": op_pub, "name": "aether-test",
                   "nats": {"type": "operator", "version": 2}}, operator)
    accounts: dict[str, JwtAccount] = {}
    preload: list[str] = []
    for account_name in ["SYS", *account_names]:
        kp = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        pub = kp.public_key.decode()
        limits: dict[str, Any] = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                                  "wildcards": True, "conn": -1, "leaf": -1}
        if account_name != "SYS":
            limits.update({"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1})
        token = _jwt({"iss": op_pub, "sub": pub, "name": account_name,
                      "nats": {"type": "account", "version": 2, "limits": limits}}, operator)
        preload.append(f"{pub}: {json.dumps(token)}")
        accounts[account_name] = JwtAccount(pub, kp)
    config = (f"operator: {json.dumps(op_jwt)}\nsystem_account: {accounts['SYS'].public_key}\n"
              f"resolver: MEMORY\nresolver_preload: {{ {', '.join(preload)} }}\n")
    accounts.pop("SYS")
    return config, accounts
