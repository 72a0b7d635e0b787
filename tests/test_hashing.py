"""The short hashes name cache entries and identities that outlive a release: their spelling must not change."""

import hashlib
import json

from nuner_core.hashing import file_sha256, short_hash


def test_short_hash_is_the_sha256_prefix():
    assert short_hash("abc") == "ba7816bf8f01cfea"  # sha256("abc"), 16 hex digits by default
    assert short_hash("abc", 12) == "ba7816bf8f01"
    payload = json.dumps(["v1", [-1], 512])
    assert short_hash(payload, 24) == hashlib.sha256(payload.encode()).hexdigest()[:24]
    assert short_hash("é") == hashlib.sha256("é".encode("utf-8")).hexdigest()[:16]


def test_file_sha256_is_the_hash_of_the_bytes(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"abc")
    assert file_sha256(path) == hashlib.sha256(b"abc").hexdigest()
