package gatewaydns

import (
	"hash/maphash"
	"math/bits"

	"github.com/coredns/coredns/plugin/file/tree"
	"github.com/miekg/dns"
)

// nameIndex finds a zone tree's element by its exact owner name with one hash and a few
// array reads, where the tree's Search compares names label by label in canonical order on
// every level (about 17 levels at 50,000 names, and file's Lookup searches once per label of
// the query name). It holds the same elements as the tree of its version, keyed by
// Elem.Name(). It is persistent like the tree (ptree.go): with and without copy only the
// nodes on the path to the name (a hash array mapped trie, 32 ways per level), so a new
// version of a zone shares the rest with the version queries are still reading, and a change
// costs O(log32 n) whatever the zone's size. Nothing modifies a node once an index is
// served.
type nameIndex struct {
	root *inode
	seed maphash.Seed
	size int

	fixedHash func(string) uint64 // tests only: a hash of their choosing (collisions)
}

// inode is a trie node: bitmap says which of the 32 hash chunks at this level have a slot,
// slots holds them in chunk order. Below the hash's last bits (shift >= 64) a node is a list
// of leaves whose names have the same 64-bit hash (bitmap unused).
type inode struct {
	bitmap uint32
	slots  []islot
}

// islot is a child node or, when node is nil, a leaf: an element of the tree.
type islot struct {
	node *inode
	elem *tree.Elem
}

const (
	ibits  = 5
	imask  = 1<<ibits - 1
	ishift = 64 // a node at this shift or deeper is a collision list
)

func newNameIndex() *nameIndex { return &nameIndex{seed: maphash.MakeSeed()} }

func (x *nameIndex) hash(name string) uint64 {
	if x.fixedHash != nil {
		return x.fixedHash(name)
	}
	return maphash.String(x.seed, name)
}

// get returns the element named exactly name (the tree's own string for it), or nil.
func (x *nameIndex) get(name string) *tree.Elem {
	if x == nil {
		return nil
	}
	return x.lookup(name, x.hash(name))
}

// lookup is get with the name's hash h.
func (x *nameIndex) lookup(name string, h uint64) *tree.Elem {
	n := x.root
	for shift := uint(0); n != nil; shift += ibits {
		if shift >= ishift {
			for _, s := range n.slots {
				if s.elem.Name() == name {
					return s.elem
				}
			}
			return nil
		}
		bit := uint32(1) << ((h >> shift) & imask)
		if n.bitmap&bit == 0 {
			return nil
		}
		s := n.slots[bits.OnesCount32(n.bitmap&(bit-1))]
		if s.node == nil {
			if s.elem.Name() == name {
				return s.elem
			}
			return nil
		}
		n = s.node
	}
	return nil
}

// with returns an index that maps e.Name() to e, sharing everything else with x. inPlace
// modifies x's nodes instead: only while building an index that nothing reads yet.
func (x *nameIndex) with(e *tree.Elem, inPlace bool) *nameIndex {
	name := e.Name()
	root, added := x.assoc(x.root, e, name, x.hash(name), 0, inPlace)
	size := x.size
	if added {
		size++
	}
	if inPlace {
		x.root, x.size = root, size
		return x
	}
	return &nameIndex{root: root, seed: x.seed, size: size, fixedHash: x.fixedHash}
}

// without returns an index without name, sharing everything else with x.
func (x *nameIndex) without(name string) *nameIndex {
	root, removed := x.dissoc(x.root, name, x.hash(name), 0)
	if !removed {
		return x
	}
	return &nameIndex{root: root, seed: x.seed, size: x.size - 1, fixedHash: x.fixedHash}
}

func (x *nameIndex) assoc(n *inode, e *tree.Elem, name string, h uint64, shift uint, inPlace bool) (*inode, bool) {
	if n == nil {
		n = &inode{}
		inPlace = true
	}
	if shift >= ishift {
		for i, s := range n.slots {
			if s.elem.Name() == name {
				c := n.own(inPlace)
				c.slots[i].elem = e
				return c, false
			}
		}
		c := n.own(inPlace)
		c.slots = append(c.slots, islot{elem: e})
		return c, true
	}
	bit := uint32(1) << ((h >> shift) & imask)
	i := bits.OnesCount32(n.bitmap & (bit - 1))
	if n.bitmap&bit == 0 {
		c := n.own(inPlace)
		c.bitmap |= bit
		c.slots = append(c.slots, islot{})
		copy(c.slots[i+1:], c.slots[i:])
		c.slots[i] = islot{elem: e}
		return c, true
	}
	s := n.slots[i]
	if s.node != nil {
		child, added := x.assoc(s.node, e, name, h, shift+ibits, inPlace)
		c := n.own(inPlace)
		c.slots[i].node = child
		return c, added
	}
	if s.elem.Name() == name {
		c := n.own(inPlace)
		c.slots[i].elem = e
		return c, false
	}
	// Two names in one slot: push both one level down.
	other := s.elem
	child, _ := x.assoc(nil, other, other.Name(), x.hash(other.Name()), shift+ibits, true)
	child, _ = x.assoc(child, e, name, h, shift+ibits, true)
	c := n.own(inPlace)
	c.slots[i] = islot{node: child}
	return c, true
}

func (x *nameIndex) dissoc(n *inode, name string, h uint64, shift uint) (*inode, bool) {
	if n == nil {
		return nil, false
	}
	if shift >= ishift {
		for i, s := range n.slots {
			if s.elem.Name() == name {
				if len(n.slots) == 1 {
					return nil, true
				}
				c := &inode{slots: append(append([]islot{}, n.slots[:i]...), n.slots[i+1:]...)}
				return c, true
			}
		}
		return n, false
	}
	bit := uint32(1) << ((h >> shift) & imask)
	if n.bitmap&bit == 0 {
		return n, false
	}
	i := bits.OnesCount32(n.bitmap & (bit - 1))
	s := n.slots[i]
	if s.node != nil {
		child, removed := x.dissoc(s.node, name, h, shift+ibits)
		if !removed {
			return n, false
		}
		c := n.own(false)
		if child == nil {
			c.dropSlot(i, bit)
		} else {
			c.slots[i].node = child
		}
		if len(c.slots) == 0 {
			return nil, true
		}
		return c, true
	}
	if s.elem.Name() != name {
		return n, false
	}
	c := n.own(false)
	c.dropSlot(i, bit)
	if len(c.slots) == 0 {
		return nil, true
	}
	return c, true
}

// own returns n when it may be modified, else a copy of it.
func (n *inode) own(inPlace bool) *inode {
	if inPlace {
		return n
	}
	c := &inode{bitmap: n.bitmap, slots: make([]islot, len(n.slots), len(n.slots)+1)}
	copy(c.slots, n.slots)
	return c
}

func (n *inode) dropSlot(i int, bit uint32) {
	n.slots = append(n.slots[:i], n.slots[i+1:]...)
	n.bitmap &^= bit
}

// countSpecial returns the number of special elements in t.
func countSpecial(t *tree.Tree, origin string) int {
	n := 0
	_ = t.Walk(func(e *tree.Elem, _ map[uint16][]dns.RR) error {
		if special(e, origin) {
			n++
		}
		return nil
	})
	return n
}

// indexTree builds the index of a tree's elements.
func indexTree(t *tree.Tree) *nameIndex {
	x := newNameIndex()
	_ = t.Walk(func(e *tree.Elem, _ map[uint16][]dns.RR) error {
		x.with(e, true)
		return nil
	})
	return x
}

// special reports whether e makes file's Lookup do more than return its records for a
// query of its exact name: a delegation (NS below the apex) or a DNAME, which also change
// the answers for every name below e.
func special(e *tree.Elem, origin string) bool {
	if e == nil {
		return false
	}
	return (e.Type(dns.TypeNS) != nil && e.Name() != origin) || e.Type(dns.TypeDNAME) != nil
}
