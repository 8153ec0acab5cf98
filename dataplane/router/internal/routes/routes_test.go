package routes

import (
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// The exact bytes tfgateway writes (data-plane spec §2.4).
const gatewayValue = `{"Key":"/tcprouter/service/www.example.com","Value":"eyJhZGRyIjoiMTAuMC4wLjUiLCJjbGllbnRzZWNyZXQiOiIiLCJ0bHNwb3J0Ijo0NDMsImh0dHBwb3J0Ijo4MCwidXNlciI6IjEyMzQifQ=="}`

func envelopeOf(inner string) []byte {
	return fmt.Appendf(nil, `{"Key":"k","Value":%q}`, base64.StdEncoding.EncodeToString([]byte(inner)))
}

func TestDecodeGatewayBytes(t *testing.T) {
	svc, err := Decode("/tcprouter/service/www.example.com", []byte(gatewayValue))
	if err != nil {
		t.Fatal(err)
	}
	want := Service{Addr: "10.0.0.5", TLSPort: 443, HTTPPort: 80}
	if svc != want {
		t.Fatalf("got %+v, want %+v", svc, want)
	}
}

func TestDecodeCaseInsensitiveAndTunnel(t *testing.T) {
	svc, err := Decode("k", envelopeOf(`{"ADDR":"","ClientSecret":"1234:s","TLSPort":0,"HttpPort":0,"user":"1234","extra":1}`))
	if err != nil || !svc.IsTunnel() || svc.ClientSecret != "1234:s" {
		t.Fatalf("got %+v, %v", svc, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	for name, raw := range map[string][]byte{
		"not json":      []byte("nope"),
		"value not b64": []byte(`{"Key":"k","Value":"!!"}`),
		"inner invalid": envelopeOf(`{"httpport" 80}`),
		"port range":    envelopeOf(`{"addr":"10.0.0.1","httpport":70000}`),
	} {
		var de *DecodeError
		if _, err := Decode("k", raw); !errors.As(err, &de) {
			t.Errorf("%s: err = %v, want *DecodeError", name, err)
		}
	}
}

func TestCheckTarget(t *testing.T) {
	for _, ok := range []string{"10.0.0.5", "203.0.113.7", "2001:db8::1"} {
		if err := CheckTarget(ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"127.0.0.1", "127.1.2.3", "::1", "0.0.0.0", "::", "169.254.169.254",
		"fe80::1", "::ffff:127.0.0.1", "224.0.0.1", "localhost", "example.com", ""} {
		if err := CheckTarget(bad); !errors.Is(err, ErrForbiddenTarget) {
			t.Errorf("%q allowed (err %v)", bad, err)
		}
	}
}

func TestTableOrder(t *testing.T) {
	tb := NewTable(map[string]Service{
		"Static.example": {Addr: "10.0.0.1", HTTPPort: 1},
		"CATCH_ALL":      {Addr: "10.0.0.9", HTTPPort: 9},
	}, "CATCH_ALL")
	tb.Set("static.example", Service{Addr: "10.0.0.2"}) // static wins, as in trs
	tb.Set("Dyn.example", Service{Addr: "10.0.0.3"})
	check := func(host, addr, route string) {
		t.Helper()
		s, r, ok := tb.Lookup(host)
		if !ok || s.Addr != addr || r != route {
			t.Fatalf("Lookup(%q) = %+v %q %v; want %s via %q", host, s, r, ok, addr, route)
		}
	}
	check("STATIC.example", "10.0.0.1", "static.example")
	check("dyn.example", "10.0.0.3", "dyn.example")
	check("other.example", "10.0.0.9", CatchAllRoute)
	tb.Delete("dyn.example")
	check("dyn.example", "10.0.0.9", CatchAllRoute)
	tb.Replace(map[string]Service{"New.example": {Addr: "10.0.0.4"}})
	check("new.example", "10.0.0.4", "new.example")
	if tb.Len() != 1 {
		t.Fatalf("Len = %d", tb.Len())
	}
	if _, _, ok := NewTable(nil, "CATCH_ALL").Lookup("x"); ok {
		t.Fatal("empty table matched")
	}
}

func TestTableConcurrent(t *testing.T) {
	tb := NewTable(nil, "CATCH_ALL")
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range 500 {
				h := fmt.Sprintf("h%d-%d", w, i%20)
				tb.Set(h, Service{Addr: "10.0.0.1"})
				if i%3 == 0 {
					tb.Delete(h)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := range 2000 {
				tb.Lookup(fmt.Sprintf("h%d-%d", w, i%20))
			}
		}()
	}
	wg.Add(1)
	go func() { // resyncs meanwhile
		defer wg.Done()
		for i := range 50 {
			tb.Replace(map[string]Service{fmt.Sprintf("r%d", i): {Addr: "10.0.0.2"}})
			_ = tb.Len()
		}
	}()
	wg.Wait()
	tb.Replace(map[string]Service{"last": {Addr: "10.0.0.3"}})
	if tb.Len() != 1 {
		t.Fatalf("Len = %d after a Replace with one route", tb.Len())
	}
}

func TestTableApply(t *testing.T) {
	tb := NewTable(nil, "CATCH_ALL")
	tb.Set("keep.example", Service{Addr: "10.0.0.1"})
	tb.Set("gone.example", Service{Addr: "10.0.0.2"})
	tb.Apply(map[string]Service{
		"New.Example":  {Addr: "10.0.0.3"},
		"keep.example": {Addr: "10.0.0.4"},
		"both.example": {Addr: "10.0.0.5"},
	}, []string{"GONE.example", "both.example", "never.example"})
	want := map[string]string{"keep.example": "10.0.0.4", "new.example": "10.0.0.3"}
	if tb.Len() != len(want) {
		t.Fatalf("Len = %d, want %d", tb.Len(), len(want))
	}
	for h, addr := range want {
		if s, name, ok := tb.Lookup(h); !ok || name != h || s.Addr != addr {
			t.Fatalf("Lookup(%s) = %+v %q %v, want %s", h, s, name, ok, addr)
		}
	}
	var before [shards]*map[string]Service
	for i := range tb.dynamic {
		before[i] = tb.dynamic[i].Load()
	}
	tb.Apply(nil, nil)
	tb.Set("one.example", Service{Addr: "10.0.0.6"})
	copied := 0
	for i := range tb.dynamic {
		if tb.dynamic[i].Load() != before[i] {
			copied++
		}
	}
	if copied != 1 {
		t.Fatalf("one change copied %d shards", copied)
	}
	if tb.Len() != 3 {
		t.Fatalf("Len = %d after adding a third route", tb.Len())
	}
	tb.Replace(map[string]Service{"R.example": {Addr: "10.0.0.7"}})
	if s, _, ok := tb.Lookup("r.EXAMPLE"); !ok || s.Addr != "10.0.0.7" || tb.Len() != 1 {
		t.Fatalf("after Replace: %+v %v, Len %d", s, ok, tb.Len())
	}
	if _, _, ok := tb.Lookup("keep.example"); ok {
		t.Fatal("Replace kept an old route")
	}
}

// tfgateway's optional keys: absent in the Go daemon's bytes (passthrough, as tcprouter),
// present for routes that ask; bad values refuse the route with a clear error.
func TestDecodeTerminationKeys(t *testing.T) {
	svc, err := Decode("k", envelopeOf(`{"addr":"10.0.0.5","clientsecret":"","tlsport":443,"httpport":80,"user":"1","terminate":"http","redirect":true,"proxyprotocol":2}`))
	want := Service{Addr: "10.0.0.5", TLSPort: 443, HTTPPort: 80, Terminate: TerminateHTTP, Redirect: true, ProxyProtocol: 2}
	if err != nil || svc != want {
		t.Fatalf("got %+v, %v; want %+v", svc, err, want)
	}
	svc, err = Decode("k", envelopeOf(`{"clientsecret":"1:s","Terminate":"TCP","ProxyProtocol":1}`))
	if err != nil || svc.Terminate != TerminateTCP || svc.ProxyProtocol != 1 || !svc.IsTunnel() {
		t.Fatalf("got %+v, %v", svc, err)
	}
	gw, _ := Decode("k", []byte(gatewayValue))
	if gw.Terminate != Passthrough || gw.Redirect || gw.ProxyProtocol != 0 {
		t.Fatalf("the Go daemon's record must stay passthrough: %+v", gw)
	}
	for name, inner := range map[string]string{
		"unknown terminate": `{"addr":"10.0.0.1","httpport":80,"terminate":"yes"}`,
		"terminate type":    `{"addr":"10.0.0.1","httpport":80,"terminate":true}`,
		"proxy version":     `{"addr":"10.0.0.1","httpport":80,"proxyprotocol":3}`,
		"redirect type":     `{"addr":"10.0.0.1","httpport":80,"redirect":"yes"}`,
	} {
		var de *DecodeError
		if _, err := Decode("k", envelopeOf(inner)); !errors.As(err, &de) {
			t.Errorf("%s: err = %v, want *DecodeError", name, err)
		}
	}
}
