"""Development explorer: a small, faithful TFExplorer for tests, the local run and VM tests.

`server.DevExplorer` serves the explorer endpoints the gateway uses plus a `/dev/` admin API;
`admin_client.AdminClient` drives that API; `user_crypto` does what a user does to publish a
reverse-proxy secret. Documentation: devexplorer/README.md.
"""
