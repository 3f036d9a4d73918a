"""Encrypted artifacts: unreadable without the key, refused when modified, never overwritten."""

from __future__ import annotations

import hashlib
import re
import stat
import threading
from pathlib import Path

import pytest

from securemodel.crypto.artifacts import (
    ArtifactError,
    ArtifactExistsError,
    ArtifactBindingError,
    ArtifactDigestError,
    ArtifactTamperedError,
    Binding,
    new_data_key,
    read_artifact,
    read_data_key,
    write_artifact,
)

PAYLOAD = b"model weights: " + bytes(range(256)) * 40
HEADER = 4 + 1 + 2 + len('{"kind":"model"}')  # magic, format version, binding length, binding
MODEL = {"uid": "0b6c1f9e-2d1a-4c1e-9a53-5c0e0b7d2f11", "training": "v1a2b3c4d", "version": "v5e6f7a8b",
         "encoding": "compressed"}


@pytest.fixture
def key() -> bytes:
    return new_data_key()


@pytest.fixture
def artifact(tmp_path: Path, key: bytes) -> Path:
    path = tmp_path / "model.smaf"
    write_artifact(path, PAYLOAD, key, kind="model")
    return path


def tampered_message(path: Path) -> str:
    return re.escape(f"artifact {path} failed authentication: modified, truncated or wrong key")


def test_round_trip_and_digest_of_the_file(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "model.smaf"
    digest = write_artifact(path, PAYLOAD, key, kind="model")
    assert digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_artifact(path, key, kind="model") == PAYLOAD


def test_file_reveals_nothing_of_the_payload(tmp_path: Path, key: bytes) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_artifact(first, PAYLOAD, key, kind="model")
    write_artifact(second, PAYLOAD, key, kind="model")
    blob = first.read_bytes()
    assert all(PAYLOAD[i : i + 8] not in blob for i in range(0, len(PAYLOAD) - 8, 8))
    assert key not in blob
    assert blob[HEADER:] != second.read_bytes()[HEADER:], "same payload, same key: the nonce must differ"
    assert stat.S_IMODE(first.stat().st_mode) == 0o640


@pytest.mark.parametrize("offset", [0, 4, 5, 6, HEADER, HEADER + 11, HEADER + 12, HEADER + 500, -16, -1])
def test_one_flipped_byte_anywhere_is_refused(artifact: Path, key: bytes, offset: int) -> None:
    blob = bytearray(artifact.read_bytes())
    blob[offset] ^= 0x01
    artifact.write_bytes(bytes(blob))
    with pytest.raises(ArtifactTamperedError, match=tampered_message(artifact)):
        read_artifact(artifact, key, kind="model")


@pytest.mark.parametrize("padding", [b" ", b"\t", b"\n", b"\r"])
def test_a_header_lengthened_over_whitespace_is_refused_as_tampered(
    artifact: Path, key: bytes, padding: bytes
) -> None:
    """A length field raised by one takes the nonce's first byte into the header; JSON whitespace there still
    decodes to the expected binding, and must be refused as tampering, not named as that binding."""
    blob = bytearray(artifact.read_bytes())
    blob[5:7] = (int.from_bytes(blob[5:7], "big") + 1).to_bytes(2, "big")
    blob[HEADER] = padding[0]
    artifact.write_bytes(bytes(blob))
    with pytest.raises(ArtifactTamperedError, match=tampered_message(artifact)) as refused:
        read_artifact(artifact, key, kind="model")
    assert not isinstance(refused.value, ArtifactBindingError)


@pytest.mark.parametrize("keep", [0, 3, HEADER, HEADER + 12, HEADER + 12 + 15, -1])
def test_truncation_is_refused(artifact: Path, key: bytes, keep: int) -> None:
    artifact.write_bytes(artifact.read_bytes()[:keep])
    with pytest.raises(ArtifactTamperedError, match=tampered_message(artifact)):
        read_artifact(artifact, key, kind="model")


def test_appended_bytes_are_refused(artifact: Path, key: bytes) -> None:
    artifact.write_bytes(artifact.read_bytes() + b"\x00")
    with pytest.raises(ArtifactTamperedError, match=tampered_message(artifact)):
        read_artifact(artifact, key, kind="model")


def test_wrong_key_is_refused(artifact: Path) -> None:
    with pytest.raises(ArtifactTamperedError, match=tampered_message(artifact)):
        read_artifact(artifact, new_data_key(), kind="model")


def test_an_artifact_of_another_kind_is_refused(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "update.smaf"
    write_artifact(path, PAYLOAD, key, kind="fl-update")
    with pytest.raises(ArtifactBindingError, match="kind: fl-update, expected model; the header is genuine"):
        read_artifact(path, key, kind="model")


def test_relabelling_the_kind_in_the_header_is_refused(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "metric.smaf"
    write_artifact(path, PAYLOAD, key, kind="mode1")
    path.write_bytes(path.read_bytes().replace(b"mode1", b"model", 1))
    with pytest.raises(ArtifactTamperedError, match=tampered_message(path)):
        read_artifact(path, key, kind="model")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uid", "7d3e2a10-0000-4000-8000-000000000000"),  # another SecureModel's artifact
        ("training", "v00000001"),  # an older training of the same model
        ("version", "v00000002"),  # another compression of the same training
        ("encoding", "fp32"),  # the trained artifact at the compressed path
    ],
)
def test_a_genuine_artifact_of_another_binding_is_refused_and_named(
    tmp_path: Path, key: bytes, field: str, value: str
) -> None:
    path = tmp_path / "swapped.smaf"
    write_artifact(path, PAYLOAD, key, kind="model", binding={**MODEL, field: value})
    expected = re.escape(f"{field}: {value}, expected {MODEL[field]}; the header is genuine")
    with pytest.raises(ArtifactBindingError, match=expected) as raised:
        read_artifact(path, key, kind="model", binding=MODEL)
    assert str(raised.value).startswith(f"artifact {path} was written for model (")
    assert raised.value.authentic and raised.value.found == Binding.of("model", {**MODEL, field: value})
    assert read_artifact(path, key, kind="model", binding={**MODEL, field: value}) == PAYLOAD


def test_a_field_missing_from_the_binding_is_refused(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "unbound.smaf"
    write_artifact(path, PAYLOAD, key, kind="model")
    with pytest.raises(ArtifactBindingError, match=r"encoding: \(none\), expected compressed"):
        read_artifact(path, key, kind="model", binding=MODEL)


def test_a_header_rewritten_to_the_expected_binding_fails_authentication(tmp_path: Path, key: bytes) -> None:
    """The reader authenticates under the binding IT expects: editing the header to match gains nothing."""
    path = tmp_path / "old.smaf"
    write_artifact(path, PAYLOAD, key, kind="model", binding={**MODEL, "training": "v00000001"})
    path.write_bytes(path.read_bytes().replace(b"v00000001", MODEL["training"].encode(), 1))
    with pytest.raises(ArtifactTamperedError, match=tampered_message(path)) as raised:
        read_artifact(path, key, kind="model", binding=MODEL)
    assert not isinstance(raised.value, ArtifactBindingError)


def test_a_forged_header_is_reported_as_not_authentic(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "forged.smaf"
    write_artifact(path, PAYLOAD, key, kind="model", binding=MODEL)
    path.write_bytes(path.read_bytes().replace(b"compressed", b"fp32xxxxxx", 1))
    with pytest.raises(ArtifactBindingError, match="the header fails authentication") as raised:
        read_artifact(path, key, kind="model", binding=MODEL)
    assert not raised.value.authentic


def test_the_digest_recorded_at_writing_is_checked(tmp_path: Path, key: bytes) -> None:
    first, second = tmp_path / "a.smaf", tmp_path / "b.smaf"
    digest = write_artifact(first, PAYLOAD, key, kind="model", binding=MODEL)
    other = write_artifact(second, PAYLOAD, key, kind="model", binding=MODEL)
    assert read_artifact(first, key, kind="model", binding=MODEL, digest=digest) == PAYLOAD
    message = re.escape(f"artifact {second} has digest {other}, not the {digest} recorded when it was written")
    with pytest.raises(ArtifactDigestError, match=message):
        read_artifact(second, key, kind="model", binding=MODEL, digest=digest)
    with pytest.raises(ValueError, match="invalid artifact digest"):
        read_artifact(first, key, kind="model", binding=MODEL, digest=digest.upper())


def test_a_format_1_artifact_is_refused(artifact: Path, key: bytes) -> None:
    blob = bytearray(artifact.read_bytes())
    blob[4] = 1
    artifact.write_bytes(bytes(blob))
    with pytest.raises(ArtifactTamperedError, match="format version 1, expected 2"):
        read_artifact(artifact, key, kind="model")


@pytest.mark.parametrize(
    "binding", [{"kind": "x"}, {"Uid": "x"}, {"uid": ""}, {"uid": "a b"}, {"uid": "x" * 254}, {"uid": 1}]
)
def test_invalid_bindings_are_refused(tmp_path: Path, key: bytes, binding: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="invalid"):
        write_artifact(tmp_path / "a", PAYLOAD, key, kind="model", binding=binding)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_never_overwritten(artifact: Path, key: bytes) -> None:
    before = artifact.read_bytes()
    with pytest.raises(ArtifactExistsError, match=re.escape(f"artifact {artifact} already exists")) as raised:
        write_artifact(artifact, b"other", key, kind="model")
    assert isinstance(raised.value, FileExistsError)
    assert artifact.read_bytes() == before
    assert sorted(p.name for p in artifact.parent.iterdir()) == [artifact.name], "no temporary file is left"


def test_concurrent_writers_one_wins_whole(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "model.smaf"
    outcomes: dict[int, str] = {}

    def writer(i: int) -> None:
        try:
            write_artifact(path, PAYLOAD + bytes([i]), key, kind="model")
            outcomes[i] = "written"
        except ArtifactExistsError:
            outcomes[i] = "exists"

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (winner,) = [i for i, outcome in outcomes.items() if outcome == "written"]
    assert read_artifact(path, key, kind="model") == PAYLOAD + bytes([winner])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_data_key_from_a_secret_file(tmp_path: Path, key: bytes) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(key)
    assert read_data_key(key_file) == key
    key_file.write_bytes(key + b"\n")
    with pytest.raises(
        ArtifactError, match=re.escape(f"data key file {key_file} holds 33 bytes, expected 32")
    ) as raised:
        read_data_key(key_file)
    assert key.hex() not in str(raised.value) and repr(key) not in str(raised.value)


def test_new_data_keys_are_random_256_bit() -> None:
    keys = {new_data_key() for _ in range(16)}
    assert len(keys) == 16 and {len(k) for k in keys} == {32}


@pytest.mark.parametrize("kind", ["", "Model", "model weights", "x" * 64, "1model"])
def test_invalid_kinds_are_refused(tmp_path: Path, key: bytes, kind: str) -> None:
    with pytest.raises(ValueError, match="invalid artifact kind"):
        write_artifact(tmp_path / "a", PAYLOAD, key, kind=kind)
    assert list(tmp_path.iterdir()) == []


def test_keys_of_the_wrong_length_are_refused(tmp_path: Path, artifact: Path) -> None:
    with pytest.raises(ValueError, match="a data key is 32 bytes, got 16"):
        write_artifact(tmp_path / "b", PAYLOAD, b"k" * 16, kind="model")
    with pytest.raises(ValueError, match="a data key is 32 bytes, got 16"):
        read_artifact(artifact, b"k" * 16, kind="model")
