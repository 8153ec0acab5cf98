// Command proxybench is the load side of benchmarks/router/bench_proxy.py: a backend that
// speaks just enough HTTP/1.1 (plain and TLS) and clients that measure bulk transfers in
// either direction, connect → first byte latency, many connections held open with light
// traffic, and a flood of unfinished connections from one source. Standard library only; Go
// on both ends so their own costs stay small next to the router's.
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: proxybench serve|bulk|ttfb|hold|flood [flags]")
	}
	raiseNoFile()
	cmds := map[string]func([]string){"serve": serve, "bulk": bulk, "ttfb": ttfb, "hold": hold, "flood": flood}
	f, ok := cmds[os.Args[1]]
	if !ok {
		log.Fatalf("unknown command %q", os.Args[1])
	}
	f(os.Args[2:])
}

func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

var block = func() []byte {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

// ---- backend ----

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	plain := fs.String("plain", "", "HTTP listen address")
	tlsAddr := fs.String("tls", "", "HTTPS listen address (self-signed)")
	_ = fs.Parse(args)
	if *plain != "" {
		ln, err := net.Listen("tcp", *plain)
		if err != nil {
			log.Fatal(err)
		}
		go accept(ln)
	}
	if *tlsAddr != "" {
		ln, err := net.Listen("tcp", *tlsAddr)
		if err != nil {
			log.Fatal(err)
		}
		go accept(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{selfSigned()}}))
	}
	select {}
}

func accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go handle(c)
	}
}

// handle answers requests on one connection: GET /down/N sends N bytes, PUT /up with a
// Content-Length reads the body and answers "ok", anything else answers "ok" (keep-alive).
func handle(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 4096)
	for {
		method, path, length, err := readHead(br)
		if err != nil {
			return
		}
		switch {
		case method == "GET" && strings.HasPrefix(path, "/down/"):
			n, _ := strconv.ParseInt(strings.TrimPrefix(path, "/down/"), 10, 64)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", n)
			for left := n; left > 0; {
				w, err := c.Write(block[:min(int64(len(block)), left)])
				if err != nil {
					return
				}
				left -= int64(w)
			}
		case length > 0:
			if _, err := io.CopyBuffer(io.Discard, io.LimitReader(br, length), make([]byte, 1<<20)); err != nil {
				return
			}
			fallthrough
		default:
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
		}
	}
}

func readHead(br *bufio.Reader) (method, path string, length int64, err error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", "", 0, err
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return "", "", 0, errors.New("bad request line")
	}
	method, path = f[0], f[1]
	for {
		h, err := br.ReadString('\n')
		if err != nil {
			return "", "", 0, err
		}
		h = strings.TrimSpace(h)
		if h == "" {
			return method, path, length, nil
		}
		if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(k, "content-length") {
			length, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
}

func selfSigned() tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: []string{"*.example", "bulk.example"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// ---- clients ----

type target struct {
	addr, host string
	tls        bool
	src        []string
	next       atomic.Uint64
}

func (t *target) flags(fs *flag.FlagSet) {
	fs.StringVar(&t.addr, "addr", "", "address to connect to")
	fs.StringVar(&t.host, "host", "bulk.example", "Host header and SNI")
	fs.BoolVar(&t.tls, "tls", false, "TLS with SNI = host")
	fs.Func("src", "comma-separated source addresses, used in turn", func(s string) error {
		t.src = strings.Split(s, ",")
		return nil
	})
}

func (t *target) dial() (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if len(t.src) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(t.src[t.next.Add(1)%uint64(len(t.src))])}
	}
	c, err := d.Dial("tcp", t.addr)
	if err != nil || !t.tls {
		return c, err
	}
	tc := tls.Client(c, &tls.Config{ServerName: t.host, InsecureSkipVerify: true}) //nolint:gosec // a benchmark's own backend
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

func emit(v any) { _ = json.NewEncoder(os.Stdout).Encode(v) }

// bulk: conns connections each move bytes in one direction; prints Gbit/s and wall seconds.
func bulk(args []string) {
	fs := flag.NewFlagSet("bulk", flag.ExitOnError)
	var t target
	t.flags(fs)
	dir := fs.String("dir", "down", "down (backend → client) or up")
	size := fs.Int64("bytes", 1<<30, "bytes per connection")
	conns := fs.Int("conns", 1, "parallel connections")
	_ = fs.Parse(args)
	var wg sync.WaitGroup
	var total atomic.Int64
	errs := make(chan error, *conns)
	start := time.Now()
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := transfer(&t, *dir, *size)
			total.Add(n)
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	close(errs)
	for err := range errs {
		log.Fatalf("bulk %s through %s: %v", *dir, t.addr, err)
	}
	emit(map[string]float64{"gbps": float64(total.Load()) * 8 / secs / 1e9, "seconds": secs, "bytes": float64(total.Load())})
}

func transfer(t *target, dir string, size int64) (int64, error) {
	c, err := t.dial()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	if dir == "down" {
		fmt.Fprintf(c, "GET /down/%d HTTP/1.1\r\nHost: %s\r\n\r\n", size, t.host)
		if err := skipHead(br); err != nil {
			return 0, err
		}
		n, err := io.CopyBuffer(io.Discard, io.LimitReader(br, size), make([]byte, 1<<20))
		if err == nil && n != size {
			err = fmt.Errorf("got %d of %d bytes", n, size)
		}
		return n, err
	}
	fmt.Fprintf(c, "PUT /up HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", t.host, size)
	var sent int64
	for sent < size {
		w, err := c.Write(block[:min(int64(len(block)), size-sent)])
		sent += int64(w)
		if err != nil {
			return sent, err
		}
	}
	return sent, skipHead(br)
}

func skipHead(br *bufio.Reader) error {
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if l == "\r\n" {
			return nil
		}
	}
}

// ttfb: n sequential connections: connect, request, first byte of the answer; prints the
// latencies in ms.
func ttfb(args []string) {
	fs := flag.NewFlagSet("ttfb", flag.ExitOnError)
	var t target
	t.flags(fs)
	n := fs.Int("n", 1000, "connections")
	_ = fs.Parse(args)
	ms := make([]float64, 0, *n)
	fails := 0
	one := make([]byte, 1)
	for range *n {
		t0 := time.Now()
		c, err := t.dial()
		if err != nil {
			fails++
			continue
		}
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", t.host)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, one); err != nil {
			fails++
		} else {
			ms = append(ms, float64(time.Since(t0).Microseconds())/1000)
		}
		c.Close()
	}
	emit(map[string]any{"ms": ms, "failed": fails})
}

// hold: n connections held open, each sending a small request every interval (spread out);
// prints, once all are open and again at the end, how many were served and failed. With
// -stdin they are held until stdin ends (the benchmark opens its groups one after another).
func hold(args []string) {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	var t target
	t.flags(fs)
	n := fs.Int("n", 1000, "connections")
	every := fs.Duration("every", 5*time.Second, "request period per connection")
	dur := fs.Duration("for", 30*time.Second, "how long to hold them once open")
	untilStdin := fs.Bool("stdin", false, "hold them until stdin ends instead of -for")
	_ = fs.Parse(args)
	var ok, failed, requests atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	opened := make(chan struct{}, *n)
	for i := range *n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := t.dial()
			opened <- struct{}{}
			if err != nil {
				failed.Add(1)
				return
			}
			defer c.Close()
			br := bufio.NewReaderSize(c, 512)
			req := fmt.Appendf(nil, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", t.host)
			buf := make([]byte, 2)
			phase := time.Duration(i) * *every / time.Duration(*n)
			timer := time.NewTimer(phase)
			for {
				_ = c.SetDeadline(time.Now().Add(*every + 30*time.Second))
				if _, err := c.Write(req); err != nil {
					failed.Add(1)
					return
				}
				if err := skipHead(br); err != nil {
					failed.Add(1)
					return
				}
				if _, err := io.ReadFull(br, buf); err != nil {
					failed.Add(1)
					return
				}
				requests.Add(1)
				select {
				case <-stop:
					ok.Add(1)
					return
				case <-timer.C:
					timer.Reset(*every)
				}
			}
		}()
		if len(t.src) == 0 && i%500 == 499 {
			time.Sleep(time.Millisecond) // let the listen backlog drain
		}
	}
	for range *n {
		<-opened
	}
	emit(map[string]any{"event": "open", "failed": failed.Load()})
	if *untilStdin {
		_, _ = io.Copy(io.Discard, os.Stdin)
	} else {
		time.Sleep(*dur)
	}
	close(stop)
	wg.Wait()
	emit(map[string]any{"event": "done", "served": ok.Load(), "failed": failed.Load(), "requests": requests.Load()})
}

// flood: n connections from one source that send only the start of a request head (or of a
// TLS ClientHello) and wait; prints once every connect returned, holds them until stdin ends.
func flood(args []string) {
	fs := flag.NewFlagSet("flood", flag.ExitOnError)
	addr := fs.String("addr", "", "address")
	src := fs.String("src", "127.0.0.2", "source address")
	n := fs.Int("n", 10000, "connections")
	mode := fs.String("mode", "http", "http or tls")
	_ = fs.Parse(args)
	payload := []byte("GET / HTTP/1.1\r\nHost: bulk.exa")
	if *mode == "tls" {
		payload = []byte("\x16\x03\x01\x02\x00\x01\x00\x01")
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(*src)}, Timeout: 10 * time.Second}
	var held []net.Conn
	for range *n {
		c, err := d.Dial("tcp", *addr)
		if err != nil {
			continue
		}
		_, _ = c.Write(payload)
		held = append(held, c)
	}
	emit(map[string]any{"attempted": *n, "open": len(held)})
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range slices.Clip(held) {
		c.Close()
	}
}
