package gatewaydns

import (
	"hash/maphash"
	"math/bits"
	"slices"

	"github.com/coredns/coredns/plugin/file/tree"
	"github.com/miekg/dns"
)

// nameIndex finds a zone tree's element by its exact owner name with one hash and a short
// scan, where the tree's Search compares names label by label in canonical order on every
// level (about 17 levels at 50,000 names, and file's Lookup searches once per label of the
// query name). It holds the same elements as the tree of its version, keyed by Elem.Name().
// It is persistent like the tree (ptree.go): with and without copy only the nodes on the
// path to the name, so a new version of a zone shares the rest with the version queries are
// still reading, and nothing modifies a node once an index is served.
//
// The structure is a hash array mapped trie (32 ways per level, by 5 bits of the name's hash
// at a time) whose leaves are buckets of up to maxBucket elements, each with 32 more bits of
// its hash to skip the others without reading them. Buckets keep it small (12 bytes per name
// and a bucket per 30-60 names: about 0.7 MB at 50,000 names) while a change copies at most
// a bucket and the nodes above it (about 1 KB at 50,000 names, bounded whatever the size).
type nameIndex struct {
	root *inode
	seed maphash.Seed
	size int

	fixedHash func(string) uint64 // tests only: a hash of their choosing (collisions)
}

// inode is a trie node: a bucket (elems and their hash bits), or an inner node whose kids
// are the non-empty subtries of the 32 hash chunks set in bitmap, in chunk order.
type inode struct {
	bitmap uint32
	bucket bool
	kids   []*inode
	tags   []uint32 // bucket: bits 32-63 of each element's hash
	elems  []*tree.Elem
}

const (
	ibits     = 5
	imask     = 1<<ibits - 1
	ishift    = 60 // deeper, a bucket is not split: its names have the same 60-bit hash prefix
	maxBucket = 96
)

func newNameIndex() *nameIndex { return &nameIndex{seed: maphash.MakeSeed()} }

func (x *nameIndex) hash(name string) uint64 {
	if x.fixedHash != nil {
		return x.fixedHash(name)
	}
	return maphash.String(x.seed, name)
}

func tag(h uint64) uint32 { return uint32(h >> 32) }

// find returns the index of the element named name (hash h) in bucket n, or -1.
func (n *inode) find(name string, h uint64) int {
	t := tag(h)
	for i, g := range n.tags {
		if g == t && n.elems[i].Name() == name {
			return i
		}
	}
	return -1
}

// get returns the element named exactly name (the tree's own string for it), or nil.
func (x *nameIndex) get(name string) *tree.Elem {
	if x == nil || x.root == nil {
		return nil
	}
	h := x.hash(name)
	n := x.root
	for shift := uint(0); !n.bucket; shift += ibits {
		bit := uint32(1) << ((h >> shift) & imask)
		if n.bitmap&bit == 0 {
			return nil
		}
		n = n.kids[bits.OnesCount32(n.bitmap&(bit-1))]
	}
	if i := n.find(name, h); i >= 0 {
		return n.elems[i]
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
		return &inode{bucket: true, tags: []uint32{tag(h)}, elems: []*tree.Elem{e}}, true
	}
	if !n.bucket {
		bit := uint32(1) << ((h >> shift) & imask)
		i := bits.OnesCount32(n.bitmap & (bit - 1))
		var kid *inode
		if n.bitmap&bit != 0 {
			kid = n.kids[i]
		}
		kid, added := x.assoc(kid, e, name, h, shift+ibits, inPlace)
		c := n.own(inPlace, 0)
		if c.bitmap&bit == 0 {
			c.bitmap |= bit
			c.kids = slices.Insert(c.kids, i, kid)
		} else {
			c.kids[i] = kid
		}
		return c, added
	}
	if i := n.find(name, h); i >= 0 {
		c := n.own(inPlace, 0)
		c.elems[i] = e
		return c, false
	}
	if len(n.elems) >= maxBucket && shift < ishift {
		// Split the full bucket into an inner node, then add e to it.
		inner := &inode{}
		for _, old := range n.elems {
			inner, _ = x.assoc(inner, old, old.Name(), x.hash(old.Name()), shift, true)
		}
		return x.assoc(inner, e, name, h, shift, true)
	}
	c := n.own(inPlace, 1)
	c.tags = append(c.tags, tag(h))
	c.elems = append(c.elems, e)
	return c, true
}

func (x *nameIndex) dissoc(n *inode, name string, h uint64, shift uint) (*inode, bool) {
	if n == nil {
		return nil, false
	}
	if !n.bucket {
		bit := uint32(1) << ((h >> shift) & imask)
		if n.bitmap&bit == 0 {
			return n, false
		}
		i := bits.OnesCount32(n.bitmap & (bit - 1))
		kid, removed := x.dissoc(n.kids[i], name, h, shift+ibits)
		if !removed {
			return n, false
		}
		if kid == nil && len(n.kids) == 1 {
			return nil, true
		}
		c := n.own(false, 0)
		if kid == nil {
			c.bitmap &^= bit
			c.kids = slices.Delete(c.kids, i, i+1)
		} else {
			c.kids[i] = kid
		}
		return c, true
	}
	i := n.find(name, h)
	if i < 0 {
		return n, false
	}
	if len(n.elems) == 1 {
		return nil, true
	}
	c := n.own(false, 0)
	c.tags = slices.Delete(c.tags, i, i+1)
	c.elems = slices.Delete(c.elems, i, i+1)
	return c, true
}

// own returns n when it may be modified, else a copy of it with room for extra more
// entries.
func (n *inode) own(inPlace bool, extra int) *inode {
	if inPlace {
		return n
	}
	c := &inode{bitmap: n.bitmap, bucket: n.bucket}
	if n.bucket {
		c.tags = append(make([]uint32, 0, len(n.tags)+extra), n.tags...)
		c.elems = append(make([]*tree.Elem, 0, len(n.elems)+extra), n.elems...)
	} else {
		c.kids = append(make([]*inode, 0, len(n.kids)+1), n.kids...)
	}
	return c
}

// compact gives every bucket and node of a freshly built trie arrays of its exact size.
func (n *inode) compact() {
	if n == nil {
		return
	}
	n.kids, n.tags, n.elems = slices.Clone(n.kids), slices.Clone(n.tags), slices.Clone(n.elems)
	for _, k := range n.kids {
		k.compact()
	}
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
	x.root.compact()
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
