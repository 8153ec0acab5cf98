package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tfgateway.dev/dataplane/router/internal/testutil"
)

func TestVersionAndBadConfig(t *testing.T) {
	if code := run([]string{"-version"}); code != 0 {
		t.Fatalf("-version exit %d", code)
	}
	if code := run([]string{"--config", "/nonexistent/router.toml"}); code != 1 {
		t.Fatalf("missing config exit %d, want 1", code)
	}
	if code := run([]string{"--bogus"}); code != 2 {
		t.Fatalf("unknown flag exit %d, want 2", code)
	}
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tfrouter")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// The real binary, with only 64 file descriptors: clients exhaust them, accept fails with
// EMFILE, and the router keeps going (trs log.Fatal's here), then serves again and stops
// cleanly on SIGTERM.
func TestSurvivesFDExhaustionAndStopsOnSIGTERM(t *testing.T) {
	bin := buildBinary(t)
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		_ = http.Serve(backend, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "alive") }))
	}()
	httpPort, metricsPort := testutil.FreePort(t), testutil.FreePort(t)
	cfg := filepath.Join(t.TempDir(), "router.toml")
	text := fmt.Sprintf(`[server]
addr = "127.0.0.1"
port = %d
httpport = %d
clientsport = %d
[server.services."a.example"]
addr = "127.0.0.1"
httpport = %d
`, testutil.FreePort(t), httpPort, testutil.FreePort(t), backend.Addr().(*net.TCPAddr).Port)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("prlimit", "--nofile=64:64", bin, "-config", cfg, "-metrics", fmt.Sprintf("127.0.0.1:%d", metricsPort))
	var logs testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	addr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	request := func() (string, error) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprint(c, "GET / HTTP/1.0\r\nHost: a.example\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	testutil.WaitFor(t, 10*time.Second, "router serving", func() bool { s, err := request(); return err == nil && s == "alive" })

	// hold 100 idle connections: more than the router has descriptors
	var idle []net.Conn
	for range 100 {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		idle = append(idle, c)
	}
	testutil.WaitFor(t, 10*time.Second, "EMFILE logged", func() bool {
		return strings.Contains(logs.String(), "too many open files")
	})
	for _, c := range idle {
		c.Close()
	}
	select {
	case err := <-exited:
		t.Fatalf("router exited on EMFILE: %v\n%s", err, logs.String())
	default:
	}
	testutil.WaitFor(t, 15*time.Second, "router serving after EMFILE", func() bool { s, err := request(); return err == nil && s == "alive" })

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if !strings.Contains(logs.String(), "tfrouter stopped") {
		t.Fatalf("no clean stop logged:\n%s", logs.String())
	}
}
