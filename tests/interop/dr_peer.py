#!/usr/bin/env python3
"""Double Ratchet peer for tests/ratchet_interop.rs, built on the PyPI package `doubleratchet`.

The library is configured so that it is, byte for byte, Cinder's ratchet (src/crypto/ratchet.rs):

- Diffie-Hellman ratchet: X25519, via doubleratchet.recommended.diffie_hellman_ratchet_curve25519.
- Root chain (KDF_RK): doubleratchet.recommended.kdf_hkdf.KDF with SHA-256 and info
  b"cinder/v1/dr/rk". The library calls HKDF(salt = root key, ikm = DH output, L = 64) and its
  KDFChain keeps the FIRST 32 bytes as the new root key and returns the LAST 32 as the chain key,
  which is exactly Cinder's `RK' || CK` split.
- Message chains (KDF_CK): doubleratchet.recommended.kdf_separate_hmacs.KDF with SHA-256 and the
  message chain constant b"\\x02\\x01". That KDF returns HMAC(CK, 0x02) || HMAC(CK, 0x01); the
  KDFChain keeps the first 32 bytes as the next chain key and returns the last 32 as the message
  key, i.e. CK' = HMAC(CK, 0x02) and MK = HMAC(CK, 0x01) as in Cinder. (The constant b"\\x01\\x02"
  would swap the two and break interop.)
- AEAD: a direct subclass of doubleratchet.aead.AEAD (not the recommended AES-CBC+HMAC one):
  key(32) || nonce(12) = HKDF-SHA-256(salt = 32 zero bytes, ikm = MK, info = b"cinder/v1/dr/msg",
  L = 44), then AES-256-GCM with the 16-byte tag appended.
- Associated data: DoubleRatchet._build_associated_data(ad, header) returns
  ad || ratchet_pub(32) || PN (u32 BE) || N (u32 BE), which is Cinder's `AD || header`.
  The library's Header is (ratchet_pub, previous_sending_chain_length = PN,
  sending_chain_length = N).
- Limits: dos_protection_threshold = 1000 (Cinder's MAX_SKIP) and max_num_skipped_message_keys =
  2000 (MAX_STORED_SKIPPED).

Protocol: one JSON object per line on stdin, one JSON object per line on stdout; bytes are hex.
At start the peer prints one line: {"ready": true, "doubleratchet": VERSION, "python": VERSION}
or, if the library cannot be imported, {"ready": false, "fatal": "import", "error": ...} and exits
with status 3. Requests ("op"):

- init_initiator {sk, their_pub, ad}: remember the parameters; the session is created by the first
  encrypt (the library creates initiator sessions only through encrypt_initial_message).
- init_responder {sk, own_priv, ad} -> {pub}: remember the parameters; the session is created by
  the first message that decrypts (decrypt_initial_message).
- encrypt {pt} -> {dh, pn, n, ct}
- decrypt {dh, pn, n, ct} -> {pt} or {"ok": false, "error": "..."}
- kdf_check {rk, dh_out, ck, mk, ad, header_dh, pn, n, pt} -> the outputs of the configured
  classes, so a mismatch can be pinned to one component.
- quit

Every response carries "ok".
"""

import asyncio
import json
import sys
from typing import Any, Dict, Optional

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    import doubleratchet
    from doubleratchet import EncryptedMessage, Header
    from doubleratchet.recommended import HashFunction
    from doubleratchet.recommended import diffie_hellman_ratchet_curve25519, kdf_hkdf, kdf_separate_hmacs
except ImportError as exc:  # pragma: no cover - reported to the Rust test
    sys.stdout.write(json.dumps({
        "ready": False,
        "fatal": "import",
        "error": f"{type(exc).__name__}: {exc}",
        "python": sys.executable,
    }) + "\n")
    sys.stdout.flush()
    sys.exit(3)


ROOT_INFO = b"cinder/v1/dr/rk"
MESSAGE_INFO = b"cinder/v1/dr/msg"
# Output of the separate-HMACs KDF is HMAC(CK, c[0]) || HMAC(CK, c[1]); KDFChain.step keeps the
# first half as the next chain key and returns the second half as the message key.
MESSAGE_CHAIN_CONSTANT = b"\x02\x01"
DOS_PROTECTION_THRESHOLD = 1000
MAX_NUM_SKIPPED_MESSAGE_KEYS = 2000


class CinderRootKDF(kdf_hkdf.KDF):
    """KDF_RK: HKDF-SHA-256(salt = RK, ikm = DH output, info = "cinder/v1/dr/rk")."""

    @staticmethod
    def _get_hash_function() -> HashFunction:
        return HashFunction.SHA_256

    @staticmethod
    def _get_info() -> bytes:
        return ROOT_INFO


class CinderMessageKDF(kdf_separate_hmacs.KDF):
    """KDF_CK: one HMAC-SHA-256(CK, byte) per constant byte."""

    @staticmethod
    def _get_hash_function() -> HashFunction:
        return HashFunction.SHA_256


def message_key_nonce(message_key: bytes) -> "tuple[bytes, bytes]":
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=None, info=MESSAGE_INFO).derive(message_key)
    return okm[:32], okm[32:]


class CinderAEAD(doubleratchet.AEAD):
    """AES-256-GCM under key || nonce = HKDF-SHA-256(0, MK, "cinder/v1/dr/msg")."""

    @staticmethod
    async def encrypt(plaintext: bytes, key: bytes, associated_data: bytes) -> bytes:
        aes_key, nonce = message_key_nonce(key)
        return AESGCM(aes_key).encrypt(nonce, plaintext, associated_data)

    @staticmethod
    async def decrypt(ciphertext: bytes, key: bytes, associated_data: bytes) -> bytes:
        aes_key, nonce = message_key_nonce(key)
        try:
            return AESGCM(aes_key).decrypt(nonce, ciphertext, associated_data)
        except InvalidTag as exc:
            raise doubleratchet.AuthenticationFailedException("AES-GCM tag mismatch") from exc


def encode_header(header: Header) -> bytes:
    return (
        header.ratchet_pub
        + header.previous_sending_chain_length.to_bytes(4, "big")
        + header.sending_chain_length.to_bytes(4, "big")
    )


class CinderDoubleRatchet(doubleratchet.DoubleRatchet):
    @staticmethod
    def _build_associated_data(associated_data: bytes, header: Header) -> bytes:
        return associated_data + encode_header(header)


CONFIG: Dict[str, Any] = {
    "diffie_hellman_ratchet_class": diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet,
    "root_chain_kdf": CinderRootKDF,
    "message_chain_kdf": CinderMessageKDF,
    "message_chain_constant": MESSAGE_CHAIN_CONSTANT,
    "dos_protection_threshold": DOS_PROTECTION_THRESHOLD,
    "max_num_skipped_message_keys": MAX_NUM_SKIPPED_MESSAGE_KEYS,
    "aead": CinderAEAD,
}


class Peer:
    def __init__(self) -> None:
        self.role: Optional[str] = None
        self.sk = b""
        self.ad = b""
        self.their_pub = b""
        self.own_priv = b""
        self.session: Optional[CinderDoubleRatchet] = None

    async def handle(self, req: Dict[str, Any]) -> Dict[str, Any]:
        op = req.get("op")
        if op == "init_initiator":
            self.role = "initiator"
            self.sk = bytes.fromhex(req["sk"])
            self.their_pub = bytes.fromhex(req["their_pub"])
            self.ad = bytes.fromhex(req["ad"])
            self.session = None
            return {"ok": True}
        if op == "init_responder":
            self.role = "responder"
            self.sk = bytes.fromhex(req["sk"])
            self.own_priv = bytes.fromhex(req["own_priv"])
            self.ad = bytes.fromhex(req["ad"])
            self.session = None
            pub = X25519PrivateKey.from_private_bytes(self.own_priv).public_key().public_bytes(
                encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
            )
            return {"ok": True, "pub": pub.hex()}
        if op == "encrypt":
            return await self.encrypt(bytes.fromhex(req["pt"]))
        if op == "decrypt":
            message = EncryptedMessage(
                header=Header(
                    ratchet_pub=bytes.fromhex(req["dh"]),
                    previous_sending_chain_length=int(req["pn"]),
                    sending_chain_length=int(req["n"]),
                ),
                ciphertext=bytes.fromhex(req["ct"]),
            )
            return {"ok": True, "pt": (await self.decrypt(message)).hex()}
        if op == "kdf_check":
            return await kdf_check(req)
        raise ValueError(f"unknown op {op!r}")

    async def encrypt(self, plaintext: bytes) -> Dict[str, Any]:
        if self.session is None:
            if self.role != "initiator":
                raise RuntimeError("a responder cannot send before its first message decrypted")
            self.session, message = await CinderDoubleRatchet.encrypt_initial_message(
                **CONFIG,
                shared_secret=self.sk,
                recipient_ratchet_pub=self.their_pub,
                message=plaintext,
                associated_data=self.ad,
            )
        else:
            message = await self.session.encrypt_message(plaintext, self.ad)
        header = message.header
        return {
            "ok": True,
            "dh": header.ratchet_pub.hex(),
            "pn": header.previous_sending_chain_length,
            "n": header.sending_chain_length,
            "ct": message.ciphertext.hex(),
        }

    async def decrypt(self, message: EncryptedMessage) -> bytes:
        if self.session is not None:
            return await self.session.decrypt_message(message, self.ad)
        if self.role != "responder":
            raise RuntimeError("an initiator must send before it can receive")
        # Builds the session from this message; if it fails to authenticate, no session is kept and
        # the next message tries again, like Cinder's transactional decrypt.
        session, plaintext = await CinderDoubleRatchet.decrypt_initial_message(
            **CONFIG,
            shared_secret=self.sk,
            own_ratchet_priv=self.own_priv,
            message=message,
            associated_data=self.ad,
        )
        self.session = session
        return plaintext


async def kdf_check(req: Dict[str, Any]) -> Dict[str, Any]:
    rk = bytes.fromhex(req["rk"])
    dh_out = bytes.fromhex(req["dh_out"])
    ck = bytes.fromhex(req["ck"])
    mk = bytes.fromhex(req["mk"])
    ad = bytes.fromhex(req["ad"])
    header = Header(
        ratchet_pub=bytes.fromhex(req["header_dh"]),
        previous_sending_chain_length=int(req["pn"]),
        sending_chain_length=int(req["n"]),
    )
    pt = bytes.fromhex(req["pt"])
    root = doubleratchet.KDFChain.create(CinderRootKDF, rk)
    chain_key_out = await root.step(dh_out, 32)
    message_chain = doubleratchet.KDFChain.create(CinderMessageKDF, ck)
    message_key_out = await message_chain.step(MESSAGE_CHAIN_CONSTANT, 32)
    full_ad = CinderDoubleRatchet._build_associated_data(ad, header)
    return {
        "ok": True,
        "root_key": root.model.key.hex(),
        "chain_key": chain_key_out.hex(),
        "next_chain_key": message_chain.model.key.hex(),
        "message_key": message_key_out.hex(),
        "full_ad": full_ad.hex(),
        "ct": (await CinderAEAD.encrypt(pt, mk, full_ad)).hex(),
    }


def main() -> int:
    sys.stdout.write(json.dumps({
        "ready": True,
        "doubleratchet": doubleratchet.__version__,
        "python": sys.version.split()[0],
    }) + "\n")
    sys.stdout.flush()
    peer = Peer()
    loop = asyncio.new_event_loop()
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(line)
                if req.get("op") == "quit":
                    sys.stdout.write(json.dumps({"ok": True}) + "\n")
                    sys.stdout.flush()
                    break
                resp = loop.run_until_complete(peer.handle(req))
            except Exception as exc:  # every failure goes back to the test as data
                resp = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(resp) + "\n")
            sys.stdout.flush()
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
