"""A reservation cache entry exactly as the Go daemon writes it (`"<version>"` + JSON + newline),
shared by the codec's unit tests and the cache's tests against redis."""

from __future__ import annotations

__all__ = ["GO_EXAMPLE"]

GO_EXAMPLE = (
    b'"1.0.0"{"id":"4521-1","node_id":"FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85",'
    b'"user_id":"42","type":"subdomain","data":{"domain":"app.gateway.example.com",'
    b'"destination":["185.69.166.1","2a02:1802:5e::1"]},"created":"2021-01-07T06:13:20Z",'
    b'"duration":9223372036854775807,"signature":"YWJjZDAx","to_delete":false,"reference":"",'
    b'"result":{"type":"subdomain","id":"4521-1","created":"2021-01-07T06:13:25.123456789Z",'
    b'"state":1,"message":"","data_json":null,"signature":"420a"},"version":2}\n'
)
