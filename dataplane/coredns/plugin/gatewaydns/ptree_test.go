package gatewaydns

import (
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"

	"github.com/coredns/coredns/plugin/file/tree"
	"github.com/miekg/dns"
)

func testElem(name string) *tree.Elem {
	t := &tree.Tree{}
	t.Insert(&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET}})
	return t.Root.Elem
}

// llrbCheck verifies the red-black invariants of a left-leaning tree and returns its
// in-order names.
func llrbCheck(t *testing.T, root *tree.Node) []string {
	t.Helper()
	if isRed(root) {
		t.Fatal("red root")
	}
	var names []string
	var walk func(n *tree.Node) int
	walk = func(n *tree.Node) int {
		if n == nil {
			return 1
		}
		if isRed(n.Right) {
			t.Fatalf("right-leaning red link at %s", n.Elem.Name())
		}
		if isRed(n) && isRed(n.Left) {
			t.Fatalf("two red links in a row at %s", n.Elem.Name())
		}
		l := walk(n.Left)
		names = append(names, n.Elem.Name())
		r := walk(n.Right)
		if l != r {
			t.Fatalf("black heights differ at %s: %d, %d", n.Elem.Name(), l, r)
		}
		if n.Color == black {
			l++
		}
		return l
	}
	walk(root)
	return names
}

// The path-copying tree against a plain set: after random batches of puts and removes the
// new version holds exactly the expected names in the tree's order, keeps the red-black
// invariants, counts right, and every earlier version is unchanged.
func TestPathCopyingTree(t *testing.T) {
	rnd := rand.New(rand.NewSource(7))
	type version struct {
		root  *tree.Node
		names []string
	}
	var versions []version
	var root *tree.Node
	set := map[string]bool{}
	count := 0
	for batch := 0; batch < 300; batch++ {
		p := newPathCopier(count)
		for i := rnd.Intn(20); i >= 0; i-- {
			name := fmt.Sprintf("h%d.example.com.", rnd.Intn(400))
			if rnd.Intn(3) == 0 {
				root = p.remove(root, name)
				delete(set, name)
			} else {
				root = p.put(root, testElem(name))
				set[name] = true
			}
		}
		count = p.count
		got := llrbCheck(t, root)
		want := make([]string, 0, len(set))
		for n := range set {
			want = append(want, n)
		}
		sort.Slice(want, func(i, j int) bool { return tree.Less(testElem(want[j]), want[i]) < 0 })
		if strings.Join(got, " ") != strings.Join(want, " ") || count != len(set) {
			t.Fatalf("batch %d: names\n%v\nwant\n%v (count %d, want %d)", batch, got, want, count, len(set))
		}
		versions = append(versions, version{root, got})
		for i, v := range versions {
			if strings.Join(llrbCheck(t, v.root), " ") != strings.Join(v.names, " ") {
				t.Fatalf("batch %d changed version %d", batch, i)
			}
		}
	}
}
