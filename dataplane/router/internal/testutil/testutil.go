// Package testutil starts the real programs tests need (redis-server, trc) on free ports
// and polls with deadlines. A missing program fails the test; nothing is skipped.
package testutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitFor polls cond every 10 ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Binary locates a program built by scripts/build-go.sh in $TFGW_BIN.
func Binary(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("TFGW_BIN")
	if dir == "" {
		dir = "/var/cache/tfgateway/bin"
	}
	p := filepath.Join(dir, name)
	if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("required program %q not found in %s or PATH; run scripts/build-go.sh", name, dir)
	return ""
}

// Redis is a redis-server started for one test.
type Redis struct {
	Port     int
	Password string
	Client   *redis.Client
	cmd      *exec.Cmd
	t        testing.TB
}

// StartRedis runs /usr/bin/redis-server on a free port without persistence.
func StartRedis(t testing.TB) *Redis { t.Helper(); return StartRedisWithPassword(t, "") }

// StartRedisWithPassword is StartRedis with requirepass set (when not empty).
func StartRedisWithPassword(t testing.TB, password string) *Redis {
	t.Helper()
	r := &Redis{Port: FreePort(t), Password: password, t: t}
	r.Start()
	r.Client = redis.NewClient(&redis.Options{Addr: r.Addr(), Password: password})
	t.Cleanup(func() { _ = r.Client.Close(); r.Stop() })
	return r
}

// Addr is host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// Start (re)starts the server on the same port.
func (r *Redis) Start() {
	r.t.Helper()
	bin := "/usr/bin/redis-server"
	if _, err := os.Stat(bin); err != nil {
		r.t.Fatalf("redis-server missing at %s: install the redis-server package", bin)
	}
	args := []string{"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no"}
	if r.Password != "" {
		args = append(args, "--requirepass", r.Password)
	}
	r.cmd = exec.Command(bin, args...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: r.Password, MaxRetries: -1})
	defer c.Close()
	WaitFor(r.t, 10*time.Second, "redis-server up", func() bool {
		return c.Ping(context.Background()).Err() == nil
	})
}

// Stop kills the server and reaps it.
func (r *Redis) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// ServiceValue builds the bytes tfgateway writes for /tcprouter/service/<host>.
func ServiceValue(host, addr, secret string, tlsPort, httpPort int) string {
	inner := fmt.Sprintf(`{"addr":%q,"clientsecret":%q,"tlsport":%d,"httpport":%d,"user":"1"}`, addr, secret, tlsPort, httpPort)
	return fmt.Sprintf(`{"Key":"/tcprouter/service/%s","Value":%q}`, host, b64(inner))
}

// ServiceValueJSON wraps an inner service JSON object in the envelope of
// /tcprouter/service/<host>, for records with tfrouter's optional keys.
func ServiceValueJSON(host, inner string) string {
	return fmt.Sprintf(`{"Key":"/tcprouter/service/%s","Value":%q}`, host, b64(inner))
}

// FreeUDPPort returns a port free for UDP and TCP on 127.0.0.1 a moment ago (DNS servers).
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	for range 50 {
		p := FreePort(t)
		if u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			_ = u.Close()
			return p
		}
	}
	t.Fatal("no free UDP port")
	return 0
}

// SyncBuffer collects log output written from many goroutines.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
