"""Parsing and checking the workloads file (docs/workloads.md): the documented example, errors
naming the file, entry and field, and a file that cannot be used."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.wireguard import new_key
from tfgateway.declared.file import FileError, entry_reservation, load, parse

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[3]
F = "/etc/w.toml"


def errors(text: str, **kw: bool) -> list[str]:
    return [str(e) for e in parse(text, F, **kw).errors]


def test_the_documented_example_parses_except_its_secret_file() -> None:
    # (Its documentation addresses are not global: allowed as with --allow-private-backends.)
    declared = load(REPO / "docs" / "workloads.example.toml", allow_private=True)
    assert sorted(e.name for e in declared.entries) == ["acme", "blog", "laptop", "shop"]
    # The example's secret file does not exist here: that entry alone is refused.
    assert [(e.name, e.field) for e in declared.errors] == [("home", "secret_file")]


def test_entries_become_the_explorer_reservation_data() -> None:
    key = new_key()
    text = f"""
[[subdomain]]
name = "blog"
domain = "Blog.GW.example.com."
addresses = ["203.0.113.7", "::ffff:203.0.113.8"]
[[fourtosix]]
name = "laptop"
public_key = "{key}"
"""
    entries = {e.name: e for e in parse(text, F).entries}
    blog = entries["blog"]
    assert blog.fields == {
        "domain": "blog.gw.example.com",
        "addresses": ["203.0.113.7", "203.0.113.8"],
    }
    r = entry_reservation(blog.kind, blog.name, blog.fields)
    assert (r.id, r.user_id, r.type) == ("file:blog", "0", "subdomain")
    assert json.loads(r.data) == {
        "domain": "blog.gw.example.com",
        "destination": ["203.0.113.7", "203.0.113.8"],
    }
    laptop = entries["laptop"]
    r = entry_reservation(laptop.kind, laptop.name, laptop.fields)
    assert (r.user_id, r.type, json.loads(r.data)) == (
        "0:laptop",
        "gateway4to6",
        {"public_key": key},
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('[[proxy]]\nname = "shop"\ndomain = "shop.example.com"\naddress = "10.0.0.1"\nport = 80\nport_tls = 443\n',  # noqa: E501
         'proxy "shop": field \'address\': proxy target 10.0.0.1 is a private'),
        ('[[proxy]]\nname = "shop"\ndomain = "shop.example.com"\naddress = "8.8.8.8"\nport = 0\nport_tls = 443\n',  # noqa: E501
         "field 'port': must be a port number 1-65535, got 0"),
        ('[[proxy]]\nname = "shop"\ndomain = "shop.example.com"\naddress = "8.8.8.8"\nport = 80\nport_tls = 443\nproxy_protocol = 3\n',  # noqa: E501
         "field 'proxy_protocol': must be 0, 1 or 2, got 3"),
        ('[[subdomain]]\nname = "a"\ndomain = "*.example.com"\naddresses = ["203.0.113.1"]\n',
         'subdomain "a": field \'domain\': domain \'*.example.com\': wildcards are not allowed'),
        ('[[subdomain]]\nname = "a"\ndomain = "a.example.com"\naddresses = []\n',
         "field 'addresses': address must contain at least one IP address"),
        ('[[subdomain]]\nname = "a"\ndomain = "a.example.com"\naddress = ["203.0.113.1"]\n',
         "field 'addresses': is missing"),
        ('[[delegation]]\nname = "a"\ndomain = "a.example.com"\nttl = 5\n',
         "field 'ttl': unknown field for a delegation"),
        ('[[fourtosix]]\nname = "a"\npublic_key = "nope"\n',
         "field 'public_key': invalid WireGuard public key"),
        ('[[delegation]]\nname = "Bad_Name"\ndomain = "a.example.com"\n',
         'delegation "Bad_Name": field \'name\': must match'),
        ('[[delegation]]\ndomain = "a.example.com"\n', 'delegation "#2": field \'name\': is missing'),  # noqa: E501
        ('[[reverse_proxy]]\nname = "home"\ndomain = "h.example.com"\nsecret_file = "/nonexistent/x"\n',  # noqa: E501
         "field 'secret_file': cannot read /nonexistent/x"),
    ],
)  # fmt: skip
def test_a_bad_entry_names_file_entry_and_field(entry: str, expected: str) -> None:
    good = '[[delegation]]\nname = "ok"\ndomain = "ok.example.com"\n'
    declared = parse(good + entry, F)
    assert [e.name for e in declared.entries] == ["ok"]  # the others are still served
    (message,) = [str(e) for e in declared.errors]
    assert message.startswith(f"{F}: ")
    assert expected in message


def test_secret_files_must_hold_an_operator_secret(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    text = f'[[reverse_proxy]]\nname = "home"\ndomain = "h.example.com"\nsecret_file = "{secret}"\n'
    secret.write_text("7:someone-elses-secret-value\n")
    assert "must be '0:' followed by at least 16" in errors(text)[0]
    secret.write_text("0:short\n")
    assert "must be '0:' followed by at least 16" in errors(text)[0]
    secret.write_text("0:" + "x" * 32 + "\n")
    (entry,) = parse(text, F).entries
    assert entry.secret == "0:" + "x" * 32
    assert entry.secret not in repr(entry)  # never in a log line by accident
    before = entry.digest
    secret.write_text("0:" + "y" * 32)
    assert parse(text, F).entries[0].digest != before  # a new secret is a change


def test_duplicate_names_are_all_refused() -> None:
    text = (
        '[[delegation]]\nname = "x"\ndomain = "a.example.com"\n'
        '[[subdomain]]\nname = "x"\ndomain = "b.example.com"\naddresses = ["203.0.113.1"]\n'
    )
    declared = parse(text, F)
    assert declared.entries == []
    assert all("names must be unique" in str(e) for e in declared.errors)
    assert len(declared.errors) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[proxy]\n", "not valid TOML"),
        ('[[subdomian]]\nname = "a"\n', "unknown entry kind [[subdomian]]"),
        ('proxy = "x"\n', "proxy must be an array of tables"),
    ],
)
def test_an_unusable_file_is_refused_as_a_whole(text: str, expected: str) -> None:
    with pytest.raises(FileError, match=re.escape(expected)):
        parse(text, F)


def test_content_digest_ignores_order_and_follows_fields() -> None:
    a = parse('[[delegation]]\nname = "x"\ndomain = "a.example.com"\n', F).entries[0]
    b = parse('[[delegation]]\ndomain = "A.example.com."\nname = "x"\n', F).entries[0]
    c = parse('[[delegation]]\nname = "x"\ndomain = "c.example.com"\n', F).entries[0]
    assert a.digest == b.digest != c.digest
