package routes

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// OnRevoke reports every tunnel route an update ends (deleted, or its name given to another
// secret), once, with SecretGone when no route references the secret any more; routes that
// keep their secret, direct routes and names a static route serves are not reported.
func TestTableRevocations(t *testing.T) {
	tab := NewTable(map[string]Service{"static.example": {ClientSecret: "s:static"}}, "CATCH_ALL")
	var got []Revoked
	tab.OnRevoke = func(r []Revoked) {
		for _, x := range r {
			if svc, _, _ := tab.Lookup(x.Host); svc.ClientSecret == x.Secret || tab.HasSecret(x.Secret) == x.SecretGone {
				t.Errorf("OnRevoke(%+v) ran before the update was visible", x)
			}
		}
		got = append(got, r...)
	}
	take := func() []Revoked {
		out := got
		got = nil
		slices.SortFunc(out, func(a, b Revoked) int { return strings.Compare(a.Host, b.Host) })
		return out
	}
	tab.Apply(map[string]Service{
		"a.example": {ClientSecret: "s:a"}, "a2.example": {ClientSecret: "s:a"},
		"direct.example": {Addr: "10.0.0.1", HTTPPort: 80}, "static.example": {ClientSecret: "s:shadowed"},
	}, nil)
	if r := take(); len(r) != 0 {
		t.Fatalf("additions revoked %+v", r)
	}
	tab.Apply(map[string]Service{"a.example": {ClientSecret: "s:a", HTTPPort: 1}}, []string{"direct.example", "static.example"})
	if r := take(); len(r) != 0 {
		t.Fatalf("same secret, a direct route, a shadowed name revoked %+v", r)
	}
	// Moved to another secret while the old one serves a2: the route only.
	tab.Set("A.example", Service{ClientSecret: "s:new"})
	if r := take(); !reflect.DeepEqual(r, []Revoked{{Host: "a.example", Secret: "s:a"}}) {
		t.Fatalf("moved: %+v", r)
	}
	// Set and deleted in one batch: one revocation, and the secret's last route is gone.
	tab.Apply(map[string]Service{"a2.example": {ClientSecret: "s:other"}}, []string{"a2.example"})
	if r := take(); !reflect.DeepEqual(r, []Revoked{{Host: "a2.example", Secret: "s:a", SecretGone: true}}) {
		t.Fatalf("deleted: %+v", r)
	}
	// A full resync that drops a route and moves another.
	tab.Set("b.example", Service{ClientSecret: "s:b"})
	take()
	tab.Replace(map[string]Service{"b.example": {ClientSecret: "s:b2"}})
	if r := take(); !reflect.DeepEqual(r, []Revoked{
		{Host: "a.example", Secret: "s:new", SecretGone: true}, {Host: "b.example", Secret: "s:b", SecretGone: true},
	}) {
		t.Fatalf("resync: %+v", r)
	}
	if !tab.HasSecret("s:static") {
		t.Fatal("the static route's secret was dropped")
	}
}
