"""ThreeFold Grid gateway agent: a drop-in, hardened replacement for the Go tfgateway daemon."""

__version__ = "2.0.0"
