"""The data every layer speaks, in the Go daemon's bytes.

`gojson` is Go's `encoding/json` byte for byte; `reservation` is the Go daemon's
`provision.Reservation` and its result, their signing bytes and the cache value codec. Imports
nothing else of the agent.
"""
