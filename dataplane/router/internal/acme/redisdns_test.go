package acme

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"

	"tfgateway.dev/dataplane/router/internal/testutil"
)

// gatewayDNS runs the gateway's CoreDNS (coredns-tfgw with the gatewaydns plugin) on a free
// port, serving the zones of the test's redis.
func gatewayDNS(t *testing.T, rd *testutil.Redis) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreeUDPPort(t))
	corefile := filepath.Join(t.TempDir(), "Corefile")
	text := fmt.Sprintf(".:%s {\n bind 127.0.0.1\n gatewaydns {\n  address %s\n  nameservers ns1.gw.example\n }\n}\n",
		strings.Split(addr, ":")[1], rd.Addr())
	if err := os.WriteFile(corefile, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testutil.Binary(t, "coredns-tfgw"), "-conf", corefile)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	q := new(dns.Msg)
	q.SetQuestion("gw.example.", dns.TypeSOA)
	testutil.WaitFor(t, 20*time.Second, "CoreDNS serving gw.example", func() bool {
		in, err := dns.Exchange(q, addr)
		return err == nil && in.Rcode == dns.RcodeSuccess && len(in.Answer) == 1
	})
	return addr
}

func txtAnswer(t *testing.T, addr, name string) []string {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeTXT)
	in, err := dns.Exchange(q, addr)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, rr := range in.Answer {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out
}

// DNS-01 records go into the zone hash the gatewaydns plugin serves; AppendRecords returns
// once the gateway's own DNS answers them, two challenges for one name (a wildcard and its
// apex) coexist, other record types of the owner are kept, removal takes only the record
// named.
func TestRedisDNSProvider(t *testing.T) {
	rd := testutil.StartRedis(t)
	ctx := context.Background()
	if err := rd.Client.HSet(ctx, "gw.example.", "@", `{"a":[{"ip":"192.0.2.1","ttl":60}]}`,
		"_acme-challenge.keep", `{"a":[{"ip":"192.0.2.9","ttl":60}]}`).Err(); err != nil {
		t.Fatal(err)
	}
	addr := gatewayDNS(t, rd)
	p := &RedisDNS{Client: rd.Client, Resolver: addr, Wait: 10 * time.Second, Poll: 20 * time.Millisecond}
	rec := func(name, text string) []libdns.Record {
		return []libdns.Record{libdns.RR{Type: "TXT", Name: name, Data: text, TTL: time.Minute}}
	}
	for _, text := range []string{"token-one", "token-two"} {
		got, err := p.AppendRecords(ctx, "gw.example.", rec("_acme-challenge", text))
		if err != nil || len(got) != 1 {
			t.Fatalf("append %s: %v, %v", text, got, err)
		}
	}
	if got := txtAnswer(t, addr, "_acme-challenge.gw.example."); len(got) != 2 {
		t.Fatalf("served %v, want both tokens", got)
	}
	if _, err := p.AppendRecords(ctx, "gw.example.", rec("_acme-challenge.keep", "t3")); err != nil {
		t.Fatal(err)
	}
	if v := rd.Client.HGet(ctx, "gw.example.", "_acme-challenge.keep").Val(); v != `{"a":[{"ip":"192.0.2.9","ttl":60}],"txt":[{"text":"t3","ttl":60}]}` {
		t.Fatalf("owner's other records not kept: %s", v)
	}
	if _, err := p.DeleteRecords(ctx, "gw.example.", rec("_acme-challenge", "token-one")); err != nil {
		t.Fatal(err)
	}
	if v := rd.Client.HGet(ctx, "gw.example.", "_acme-challenge").Val(); v != `{"txt":[{"text":"token-two","ttl":60}]}` {
		t.Fatalf("after removing one token: %s", v)
	}
	_, _ = p.DeleteRecords(ctx, "gw.example.", rec("_acme-challenge", "token-two"))
	_, _ = p.DeleteRecords(ctx, "gw.example.", rec("_acme-challenge.keep", "t3"))
	if rd.Client.HExists(ctx, "gw.example.", "_acme-challenge").Val() {
		t.Fatal("empty owner left in the zone")
	}
	if v := rd.Client.HGet(ctx, "gw.example.", "_acme-challenge.keep").Val(); v != `{"a":[{"ip":"192.0.2.9","ttl":60}]}` {
		t.Fatalf("other records of the owner: %s", v)
	}
	testutil.WaitFor(t, 5*time.Second, "token gone from DNS", func() bool {
		return len(txtAnswer(t, addr, "_acme-challenge.gw.example.")) == 0
	})

	// a zone the gateway does not serve: a clear error, nothing written
	_, err := p.AppendRecords(ctx, "other.example.", rec("_acme-challenge", "x"))
	if err == nil || !strings.Contains(err.Error(), "zone other.example. is not served by this gateway") {
		t.Fatalf("unserved zone: %v", err)
	}
	if rd.Client.Exists(ctx, "other.example.").Val() != 0 {
		t.Fatal("a zone was created")
	}
	if _, err := p.AppendRecords(ctx, "gw.example.", []libdns.Record{libdns.RR{Type: "A", Name: "x", Data: "192.0.2.1"}}); err == nil {
		t.Fatal("an A record was accepted")
	}
}
