package router

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tfgateway.dev/dataplane/router/internal/testutil"
)

// 50 tunnel clients register, die and reconnect concurrently while traffic flows through
// every tunnel. The router must stay up, and every request made after a client's tunnel is
// up must succeed (upstream trs crashes on this load: unsynchronised map, spec §2.7 #1).
func TestChurnFiftyTunnels(t *testing.T) {
	const (
		clients  = 50
		rounds   = 3
		steady   = 5 // requests that must all succeed once a tunnel serves
		register = 20 * time.Second
	)
	rd := testutil.StartRedis(t)
	_, plain := named(t, "local")
	local := fmt.Sprintf("127.0.0.1:%d", plain)
	r := startRouter(t, rd.Port, "", Options{})
	ctx := context.Background()
	for i := range clients {
		host := fmt.Sprintf("c%d.example", i)
		if err := rd.Client.Set(ctx, "/tcprouter/service/"+host,
			testutil.ServiceValue(host, "", fmt.Sprintf("%d:secret", i), 0, 0), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "routes", func() bool { return r.Table.Len() == clients })

	// background traffic to random hosts during the whole churn (failures allowed here:
	// a tunnel may be down at that moment)
	stop := make(chan struct{})
	var bg sync.WaitGroup
	var bgOK, bgTotal atomic.Int64
	for range 4 {
		bg.Add(1)
		go func() {
			defer bg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				host := fmt.Sprintf("c%d.example", rand.IntN(clients))
				bgTotal.Add(1)
				if _, err := get(r.http(), host); err == nil {
					bgOK.Add(1)
				}
			}
		}()
	}

	var wg sync.WaitGroup
	var failures atomic.Int64
	var served atomic.Int64
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			host := fmt.Sprintf("c%d.example", i)
			secret := fmt.Sprintf("%d:secret", i)
			want := "local " + host + " "
			for round := range rounds {
				cmd := trc(t, secret, r.trcAddr(), local, "")
				// wait for this client's tunnel to serve
				deadline := time.Now().Add(register)
				for {
					got, err := get(r.http(), host)
					if err == nil && got == want {
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("%s round %d: tunnel never served (last: %q, %v)", host, round, got, err)
						failures.Add(1)
						_ = cmd.Process.Kill()
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				// while this client lives, every request succeeds, whatever the others do
				for k := range steady {
					got, err := get(r.http(), host)
					if err != nil || got != want {
						t.Errorf("%s round %d request %d failed after registration: %q, %v", host, round, k, got, err)
						failures.Add(1)
					} else {
						served.Add(1)
					}
				}
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		}()
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	select {
	case err := <-r.done:
		t.Fatalf("router exited during churn: %v", err)
	default:
	}
	t.Logf("churn: %d clients x %d rounds, %d steady requests ok, %d failures; background %d/%d ok",
		clients, rounds, served.Load(), failures.Load(), bgOK.Load(), bgTotal.Load())
	testutil.WaitFor(t, 10*time.Second, "every killed client's session removed", func() bool {
		return r.Registry.Len() == 0
	})
}
