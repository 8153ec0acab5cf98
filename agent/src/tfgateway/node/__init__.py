"""This gateway node: its identity (seed file, node id, signing), the cryptography on that
identity (ed25519→curve25519, reverse-proxy secret decryption) and its location (`--location`
or geoip). Built on `model`.
"""
