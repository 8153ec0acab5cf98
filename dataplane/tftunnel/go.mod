module tfgateway.dev/dataplane/tftunnel

go 1.26

require github.com/libp2p/go-yamux v1.2.4

require github.com/libp2p/go-buffer-pool v0.0.2 // indirect
