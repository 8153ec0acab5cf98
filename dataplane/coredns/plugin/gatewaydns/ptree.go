package gatewaydns

import (
	"github.com/coredns/coredns/plugin/file/tree"
)

// The zone tree of CoreDNS's file plugin is a left-leaning red-black tree whose nodes are
// exported. A served tree must never change under the queries reading it, so an update
// copies only the nodes on the paths it changes (O(log n) per name) and shares the rest with
// the previous version: a change to one name of a 50,000-name zone copies a few dozen nodes
// instead of the whole tree. The algorithm is the tree's own (Sedgewick's bottom-up 2-3
// variant, as plugin/file/tree uses), with every node copied before it is modified; nodes
// this update created already are modified in place.

const (
	red   tree.Color = false
	black tree.Color = true
)

// pathCopier applies changes to a tree without modifying any node it did not create.
type pathCopier struct {
	fresh map[*tree.Node]bool // nodes created by this update (free to modify)
	count int                 // the tree's element count after the changes so far
}

func newPathCopier(count int) *pathCopier {
	return &pathCopier{fresh: map[*tree.Node]bool{}, count: count}
}

func isRed(n *tree.Node) bool { return n != nil && n.Color == red }

// own returns n itself when this update created it, else a fresh copy of it.
func (p *pathCopier) own(n *tree.Node) *tree.Node {
	if n == nil || p.fresh[n] {
		return n
	}
	c := &tree.Node{Elem: n.Elem, Left: n.Left, Right: n.Right, Color: n.Color}
	p.fresh[c] = true
	return c
}

// put sets the element of e's name (replacing the element there, if any) and returns the
// new root.
func (p *pathCopier) put(root *tree.Node, e *tree.Elem) *tree.Node {
	root = p.insert(root, e)
	root.Color = black
	return root
}

func (p *pathCopier) insert(n *tree.Node, e *tree.Elem) *tree.Node {
	if n == nil {
		c := &tree.Node{Elem: e, Color: red}
		p.fresh[c] = true
		p.count++
		return c
	}
	n = p.own(n)
	switch c := tree.Less(n.Elem, e.Name()); {
	case c == 0:
		n.Elem = e
	case c < 0:
		n.Left = p.insert(n.Left, e)
	default:
		n.Right = p.insert(n.Right, e)
	}
	if isRed(n.Right) && !isRed(n.Left) {
		n = p.rotateLeft(n)
	}
	if isRed(n.Left) && isRed(n.Left.Left) {
		n = p.rotateRight(n)
	}
	if isRed(n.Left) && isRed(n.Right) {
		p.flipColors(n)
	}
	return n
}

// remove deletes the element named name, if the tree has one, and returns the new root.
func (p *pathCopier) remove(root *tree.Node, name string) *tree.Node {
	if root == nil {
		return nil
	}
	if _, found := (&tree.Tree{Root: root}).Search(name); !found {
		return root
	}
	root = p.delete(root, name)
	if root != nil {
		root = p.own(root)
		root.Color = black
	}
	return root
}

// delete is the tree's own delete with copies; name is known to be in the subtree.
func (p *pathCopier) delete(n *tree.Node, name string) *tree.Node {
	n = p.own(n)
	if tree.Less(n.Elem, name) < 0 {
		if n.Left != nil {
			if !isRed(n.Left) && !isRed(n.Left.Left) {
				n = p.moveRedLeft(n)
			}
			n.Left = p.delete(n.Left, name)
		}
		return p.fixUp(n)
	}
	if isRed(n.Left) {
		n = p.rotateRight(n)
	}
	if n.Right == nil && tree.Less(n.Elem, name) == 0 {
		p.count--
		return nil
	}
	if n.Right != nil {
		if !isRed(n.Right) && !isRed(n.Right.Left) {
			n = p.moveRedRight(n)
		}
		if tree.Less(n.Elem, name) == 0 {
			m := n.Right
			for m.Left != nil {
				m = m.Left
			}
			n.Elem = m.Elem
			n.Right = p.deleteMin(n.Right)
		} else {
			n.Right = p.delete(n.Right, name)
		}
	}
	return p.fixUp(n)
}

func (p *pathCopier) deleteMin(n *tree.Node) *tree.Node {
	n = p.own(n)
	if n.Left == nil {
		p.count--
		return nil
	}
	if !isRed(n.Left) && !isRed(n.Left.Left) {
		n = p.moveRedLeft(n)
	}
	n.Left = p.deleteMin(n.Left)
	return p.fixUp(n)
}

// The helpers below take an owned n and own every other node they modify.

func (p *pathCopier) rotateLeft(n *tree.Node) *tree.Node {
	r := p.own(n.Right)
	n.Right = r.Left
	r.Left = n
	r.Color = n.Color
	n.Color = red
	return r
}

func (p *pathCopier) rotateRight(n *tree.Node) *tree.Node {
	l := p.own(n.Left)
	n.Left = l.Right
	l.Right = n
	l.Color = n.Color
	n.Color = red
	return l
}

func (p *pathCopier) flipColors(n *tree.Node) {
	n.Left, n.Right = p.own(n.Left), p.own(n.Right)
	n.Color = !n.Color
	n.Left.Color = !n.Left.Color
	n.Right.Color = !n.Right.Color
}

func (p *pathCopier) fixUp(n *tree.Node) *tree.Node {
	if isRed(n.Right) {
		n = p.rotateLeft(n)
	}
	if isRed(n.Left) && isRed(n.Left.Left) {
		n = p.rotateRight(n)
	}
	if isRed(n.Left) && isRed(n.Right) {
		p.flipColors(n)
	}
	return n
}

func (p *pathCopier) moveRedLeft(n *tree.Node) *tree.Node {
	p.flipColors(n)
	if isRed(n.Right.Left) {
		n.Right = p.rotateRight(p.own(n.Right))
		n = p.rotateLeft(n)
		p.flipColors(n)
	}
	return n
}

func (p *pathCopier) moveRedRight(n *tree.Node) *tree.Node {
	p.flipColors(n)
	if isRed(n.Left.Left) {
		n = p.rotateRight(n)
		p.flipColors(n)
	}
	return n
}
