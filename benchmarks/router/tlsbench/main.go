// Command tlsbench is the load side of benchmarks/router/bench_tls.py: a backend (HTTPS and
// plain HTTP, for passthrough and terminated routes) and a client that measures full TLS
// handshakes per second or bulk download throughput through an address. Go on both ends, so
// the client's and backend's own costs stay small next to the router's.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: tlsbench serve|load [flags]")
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "load":
		load(os.Args[2:])
	default:
		log.Fatalf("unknown command %q", os.Args[1])
	}
}

var chunk = []byte(strings.Repeat("0123456789abcdef", 4096)) // 64 KiB

func handler(size int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(size))
		for left := size; left > 0; left -= int64(len(chunk)) {
			if _, err := w.Write(chunk[:min(int64(len(chunk)), left)]); err != nil {
				return
			}
		}
	})
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	tlsAddr := fs.String("tls", "", "HTTPS listen address")
	plainAddr := fs.String("plain", "", "HTTP listen address")
	cert := fs.String("cert", "", "certificate PEM")
	key := fs.String("key", "", "key PEM")
	size := fs.Int64("size", 256<<20, "bytes of /big")
	_ = fs.Parse(args)
	h := handler(*size)
	go func() {
		log.Fatal((&http.Server{Addr: *plainAddr, Handler: h, ReadHeaderTimeout: 10 * time.Second}).ListenAndServe())
	}()
	srv := &http.Server{Addr: *tlsAddr, Handler: h, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{NextProtos: []string{"http/1.1"}}}
	log.Fatal(srv.ListenAndServeTLS(*cert, *key))
}

type result struct {
	Ops     int64   `json:"ops"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Errors  int64   `json:"errors"`
	Error   string  `json:"first_error,omitempty"`
}

func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	addr := fs.String("addr", "", "where to connect")
	sni := fs.String("sni", "", "server name (SNI and Host)")
	ca := fs.String("ca", "", "CA PEM to verify with")
	conns := fs.Int("conns", 8, "concurrent clients")
	seconds := fs.Float64("seconds", 5, "duration")
	mode := fs.String("mode", "handshake", "handshake: new connection, GET /, close; bulk: GET /big")
	_ = fs.Parse(args)
	pem, err := os.ReadFile(*ca)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	// No session cache: every connection is a full handshake.
	cfg := &tls.Config{ServerName: *sni, RootCAs: pool, NextProtos: []string{"http/1.1"}}
	path := "/"
	if *mode == "bulk" {
		path = "/big"
	}
	req := []byte(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, *sni))
	deadline := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	// The clock, not ctx.Err(): under load the context's timer fires late, and a dial that
	// already sees the deadline fails at once, which is not an error of the path measured.
	running := func() bool { return time.Now().Before(deadline) }
	var ops, bytes, errs atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			d := &tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
			for running() {
				n, err := once(ctx, d, *addr, req, buf)
				bytes.Add(n)
				if err != nil {
					if running() {
						errs.Add(1)
						first.CompareAndSwap(nil, err.Error())
					}
					continue
				}
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	out := result{Ops: ops.Load(), Bytes: bytes.Load(), Seconds: time.Since(start).Seconds(), Errors: errs.Load()}
	if e, ok := first.Load().(string); ok {
		out.Error = e
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}

// once runs one connection: handshake, request, the whole response, close.
func once(ctx context.Context, d *tls.Dialer, addr string, req, buf []byte) (int64, error) {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil || ctx.Err() != nil {
			return n, err
		}
	}
}
