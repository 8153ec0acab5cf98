package persource

import (
	"net"
	"net/netip"
	"sync"
	"testing"
)

func addr(s string) net.Addr {
	return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s))
}

func TestPendingAndConnLimits(t *testing.T) {
	tab := New(Limits{Pending: 2, Conns: 3})
	a := addr("192.0.2.1:1000")
	k1, r1 := tab.Admit(a)
	k2, r2 := tab.Admit(a)
	if r1 != Admitted || r2 != Admitted {
		t.Fatalf("first two refused: %v %v", r1, r2)
	}
	if _, r := tab.Admit(addr("192.0.2.1:1002")); r != TooManyPending {
		t.Fatalf("third peek from the same source: %v, want %v", r, TooManyPending)
	}
	if _, r := tab.Admit(addr("192.0.2.2:1000")); r != Admitted {
		t.Fatalf("another source refused: %v", r)
	}
	k1.PeekDone()
	k3, r3 := tab.Admit(a)
	if r3 != Admitted {
		t.Fatalf("a peek slot freed by PeekDone not reused: %v", r3)
	}
	k3.PeekDone()
	k2.PeekDone()
	if _, r := tab.Admit(a); r != TooManyConns {
		t.Fatalf("fourth connection: %v, want %v", r, TooManyConns)
	}
	k1.Close()
	k1.Close() // twice is harmless
	if c, p := tab.Count(netip.MustParseAddr("192.0.2.1")); c != 2 || p != 0 {
		t.Fatalf("count = %d conns %d pending, want 2 0", c, p)
	}
	sum := tab.TakeSummary()
	if sum.Pending != 1 || sum.Conns != 1 || sum.Top != netip.MustParsePrefix("192.0.2.1/32") || sum.TopRefused != 2 {
		t.Fatalf("summary %+v", sum)
	}
	if again := tab.TakeSummary(); again.Pending != 0 || again.Conns != 0 || again.TopRefused != 0 {
		t.Fatalf("summary not reset: %+v", again)
	}
}

func TestIPv6GroupedByPrefix(t *testing.T) {
	tab := New(Limits{Pending: 1})
	if _, r := tab.Admit(addr("[2001:db8:1:2::1]:1")); r != Admitted {
		t.Fatal(r)
	}
	if _, r := tab.Admit(addr("[2001:db8:1:2:ffff::9]:1")); r != TooManyPending {
		t.Fatalf("another address of the same /64: %v", r)
	}
	if _, r := tab.Admit(addr("[2001:db8:1:3::1]:1")); r != Admitted {
		t.Fatalf("another /64: %v", r)
	}
	// IPv4-mapped IPv6 (a dual-stack listener) counts as the IPv4 address
	if _, r := tab.Admit(addr("[::ffff:192.0.2.7]:1")); r != Admitted {
		t.Fatal(r)
	}
	if _, r := tab.Admit(addr("192.0.2.7:2")); r != TooManyPending {
		t.Fatalf("mapped and plain IPv4 counted apart: %v", r)
	}
	tab48 := New(Limits{Pending: 1, IPv6Prefix: 48})
	tab48.Admit(addr("[2001:db8:1:2::1]:1"))
	if _, r := tab48.Admit(addr("[2001:db8:1:3::1]:1")); r != TooManyPending {
		t.Fatalf("/48 grouping: %v", r)
	}
}

// The table only holds sources with an open connection: a million sources that come and go
// leave it empty.
func TestTableHoldsOnlyLiveSources(t *testing.T) {
	tab := New(Limits{Pending: 4, Conns: 8})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20000 {
				a := net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(w), byte(i >> 8), byte(i)}), 1))
				k, r := tab.Admit(a)
				if r != Admitted {
					t.Errorf("refused %v", a)
					return
				}
				if i%2 == 0 {
					k.PeekDone()
				}
				k.Close()
			}
		}()
	}
	wg.Wait()
	if n := tab.Len(); n != 0 {
		t.Fatalf("%d sources left in the table", n)
	}
}
