"""Seed files and identity (explorer spec §8, F1)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfgateway.node.identity import Identity, SeedError, load_or_create, load_seed

MNEMONIC = (
    "crop orient animal script safe inquiry neglect tumble maple board degree you intact busy "
    "birth west crack cabin lizard embark seed adjust around talk"
)

VECTORS = [
    (
        b"helloworldhelloworldhelloworld12",
        "db26de5be5a0bd95b775170db6d80f0461d2f7c33742726fd9c6c35d39eeb9de",
        "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85",
    ),
    (
        b"12345678901234567890123456789012",
        "2f8c6129d816cf51c374bc7f08c3e63ed156cf78aefb4a6550d97b87997977ee",
        "4CcKDtU1JNGi8U4D8Rv9CHzfmF7xzaxEAPFA54eQjRHF",
    ),
    (
        b"a" * 32,
        "af06a3e3291714e4f356c19c9b15cd1951ec6e6662aa77be07547f289383341d",
        "CnEDk9HrMnmiHXEV1WFgbVCRteYnPqsJwrTdcZaNhFVW",
    ),
]


@pytest.mark.parametrize(("seed", "pub_hex", "node_id"), VECTORS)
def test_identity_vectors(seed: bytes, pub_hex: str, node_id: str, tmp_path: Path) -> None:
    ident = Identity(seed)
    assert ident.public_key_hex == pub_hex
    assert ident.public_key == bytes.fromhex(pub_hex)
    assert ident.node_id == node_id
    f = tmp_path / "seed"
    f.write_bytes(b'"1.0.0"' + seed)
    assert load_or_create(f) == ident


def test_mnemonic_seed_file_vector(tmp_path: Path) -> None:
    f = tmp_path / "seed"
    f.write_bytes(b'"1.1.0"' + json.dumps({"mnemonic": MNEMONIC, "threebotid": 7}).encode())
    ident = load_or_create(f)
    assert ident.seed.hex() == "33f3902460dbe0e9a50752878314e77f97583e45afcb31c3fa0b242c2e07030e"
    assert ident.public_key_hex == (
        "0bcc59ed4d5967cebcf5fb7928433aa31735d1c3be25e489d08406034dc01479"
    )
    assert ident.node_id == "o4DQqEXFFuvz7GPtzC1egLzSrrZuWSkCETGA5ikYNXJ"
    assert len(ident.node_id) == 43


def test_upstream_zos_seed_file_vector(tmp_path: Path) -> None:
    f = tmp_path / "seed"
    f.write_bytes(base64.b64decode("IjEuMC4wIkiwBpAxl8Xpc4fgQ4Wq3Is5ssEkObXDJANf7KoOw153"))
    ident = load_or_create(f)
    assert ident.seed.hex() == "48b006903197c5e97387e04385aadc8b39b2c12439b5c324035fecaa0ec35e77"
    assert ident.node_id == "3We9p7C3wihY3ZZSP5w4ujEBPVtm685fVW563MVFbnE8"


def test_sign_is_plain_ed25519() -> None:
    ident = Identity(b"helloworldhelloworldhelloworld12")
    sig = ident.sign(b"\x01null")
    assert sig.hex() == (
        "420a7b1afdcda375e65a8cadd643d7ef99fd774159417e2bdc37ad1c9fb69689"
        "1c4af07efc6dc73749e1cc928c08cc379841c1d832da99383dcf7ba5e888100b"
    )
    assert ident.verify(b"\x01null", sig)
    assert not ident.verify(b"\x00null", sig)


def test_missing_file_creates_loadable_1_0_0_with_mode_0400(tmp_path: Path) -> None:
    f = tmp_path / "identity.seed"
    ident = load_or_create(f)
    data = f.read_bytes()
    assert data[:7] == b'"1.0.0"'
    assert len(data) == 39
    assert data[7:] == ident.seed
    assert stat.S_IMODE(f.stat().st_mode) == 0o400
    assert load_or_create(f) == ident
    assert [p.name for p in tmp_path.iterdir()] == ["identity.seed"]  # no temp files left


def test_unversioned_file_is_upgraded_in_a_form_that_loads_again(tmp_path: Path) -> None:
    """Spec F1: upstream writes "1.1.0" + raw bytes, which fails the next start."""
    f = tmp_path / "seed"
    seed = b"12345678901234567890123456789012"
    f.write_bytes(seed)
    first = load_or_create(f)
    assert first.seed == seed
    assert f.read_bytes() == b'"1.0.0"' + seed
    assert load_or_create(f) == first
    assert load_or_create(f) == first


def test_unversioned_file_that_cannot_be_upgraded_still_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Path, target: Path) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "replace", refuse)
    f = tmp_path / "seed"
    f.write_bytes(b"x" * 32)
    assert load_or_create(f).seed == b"x" * 32
    assert f.read_bytes() == b"x" * 32  # left exactly as it was
    assert [p.name for p in tmp_path.iterdir()] == ["seed"]


@given(st.binary(min_size=32, max_size=32))
@settings(max_examples=30, deadline=None)
def test_any_raw_seed_survives_repeated_starts(
    tmp_path_factory: pytest.TempPathFactory, seed: bytes
) -> None:
    f = tmp_path_factory.mktemp("s") / "seed"
    f.write_bytes(seed)
    a = load_or_create(f)
    b = load_or_create(f)
    assert a == b
    # an unversioned seed that happens to look versioned is the only ambiguity; Go shares it
    assert f.read_bytes().endswith(a.seed)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'"1.0.0"' + b"x" * 31, "wrong size"),
        (b'"1.0.0"' + b"x" * 33, "wrong size"),
        (b"x" * 10, "wrong size"),
        (b'"2.0.0"' + b"x" * 32, "unknown seed version 2.0.0"),
        (b'"1.1.0"not json', "not valid JSON"),
        (b'"1.1.0"[1]', "JSON object"),
        (b'"1.1.0"{"mnemonic": 5}', "must be a string"),
        (b'"1.1.0"{"mnemonic": "crop orient"}', "has 2 words"),
        (b'"1.1.0"{"mnemonic": "' + (b"zzzz " * 24) + b'"}', "not in the BIP-39"),
        (
            b'"1.1.0"{"mnemonic": "' + MNEMONIC.replace("talk", "abandon").encode() + b'"}',
            "invalid mnemonic",
        ),
        (
            b'"1.1.0"{"mnemonic": "abandon abandon abandon abandon abandon abandon abandon '
            b'abandon abandon abandon abandon about"}',
            "wrong size",
        ),
    ],
)
def test_bad_seed_files_give_clear_errors(tmp_path: Path, content: bytes, message: str) -> None:
    f = tmp_path / "seed"
    f.write_bytes(content)
    with pytest.raises(SeedError, match=message) as info:
        load_or_create(f)
    assert str(f) in str(info.value)
    assert f.read_bytes() == content  # a bad file is never rewritten


def test_unreadable_seed_file(tmp_path: Path) -> None:
    d = tmp_path / "dir-not-file"
    d.mkdir()
    with pytest.raises(SeedError, match="cannot read seed file"):
        load_seed(d)


def test_cannot_create_in_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="cannot create seed file"):
        load_or_create(tmp_path / "missing" / "seed")


def test_wrong_seed_size_for_identity() -> None:
    with pytest.raises(SeedError, match="wrong size"):
        Identity(b"short")


def test_unversioned_symlinked_seed_is_read_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"y" * 32)
    link = tmp_path / "seed"
    link.symlink_to(target)
    assert load_or_create(link).seed == b"y" * 32
    assert link.is_symlink()
    assert target.read_bytes() == b"y" * 32


def test_world_readable_seed_file_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "seed"
    f.write_bytes(b'"1.0.0"' + b"z" * 32)
    f.chmod(0o644)
    with caplog.at_level("WARNING"):
        load_or_create(f)
    assert "readable by other users" in caplog.text
