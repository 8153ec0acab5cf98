package router

import (
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"
)

// spliceCopy copies src to dst with splice(2): socket → pipe → socket, the bytes never
// entering user space, as io.Copy does between two *net.TCPConn. Unlike io.Copy it holds a
// pipe only while bytes are in flight: io.Copy takes a pipe pair for the whole life of each
// direction, so every idle proxied connection would hold four extra descriptors (10,000 idle
// connections: 40,000) and the kernel's pipe bookkeeping. Here a direction that has nothing
// to read gives its pipe back to a small pool and waits in the netpoller with no buffer at all.
func spliceCopy(dst, src *net.TCPConn) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	wc, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		written int64
		p       *kpipe
	)
	defer func() {
		if p != nil {
			pipes.put(p)
		}
	}()
	for {
		// Drain: socket → pipe. The pipe is empty here; on EAGAIN it goes back to the pool
		// and the goroutine waits for the socket to be readable.
		var n int
		var serr error
		noPipe := false
		err := rc.Read(func(fd uintptr) bool {
			if p == nil {
				if p, serr = pipes.get(); serr != nil {
					p, serr, noPipe = nil, nil, true
					return true
				}
			}
			for {
				m, e := syscall.Splice(int(fd), nil, p.w, nil, pipeSize, spliceNonblock)
				switch e {
				case syscall.EINTR:
					continue
				case syscall.EAGAIN:
					pipes.put(p)
					p = nil
					return false
				}
				n, serr = int(m), e
				return true
			}
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return written, err
		}
		if noPipe { // no descriptor for a pipe right now (EMFILE): this round through memory
			m, err := copyOnce(dst, src)
			written += m
			if err != nil || m == 0 {
				return written, err
			}
			continue
		}
		if n == 0 {
			return written, nil // EOF
		}
		p.data = n
		// Pump: pipe → socket, all of it.
		err = wc.Write(func(fd uintptr) bool {
			for p.data > 0 {
				m, e := syscall.Splice(p.r, nil, int(fd), nil, p.data, spliceNonblock)
				switch {
				case e == syscall.EINTR:
					continue
				case e == syscall.EAGAIN:
					return false
				case e != nil:
					serr = e
					return true
				case m == 0:
					serr = io.ErrShortWrite
					return true
				}
				p.data -= int(m)
				written += m
			}
			return true
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return written, err
		}
	}
}

// copyOnce moves what one read returns through a pooled buffer: the fallback when no pipe
// can be had. (0, nil) is EOF.
func copyOnce(dst, src *net.TCPConn) (int64, error) {
	bp := fallbackBufs.Get().(*[]byte)
	defer fallbackBufs.Put(bp)
	n, err := src.Read(*bp)
	if n > 0 {
		w, werr := dst.Write((*bp)[:n])
		if werr != nil {
			return int64(w), werr
		}
	}
	if errors.Is(err, io.EOF) {
		return int64(n), nil
	}
	if err == nil && n == 0 {
		err = io.ErrNoProgress
	}
	return int64(n), err
}

var fallbackBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

const (
	spliceNonblock = 0x2 // SPLICE_F_NONBLOCK
	// pipeSize is what one splice moves at most (Go's own splice uses the same 1 MiB).
	pipeSize = 1 << 20
	// maxFreePipes bounds the idle pool: pipes beyond it are closed when given back.
	maxFreePipes = 64
)

// pipeIdle is how long an empty pipe waits in the pool for the next transfer before it is
// closed, so a router whose connections have ended comes back to the descriptors of its
// listeners and tunnels instead of keeping the pool's largest size (up to 2 x maxFreePipes
// descriptors, each pipe charged its full size in the user's pipe-user-pages) for good. A
// variable so tests can shorten it (read under pipes.mu).
var pipeIdle = 10 * time.Second

type kpipe struct {
	r, w int
	data int       // bytes in the pipe
	idle time.Time // when it went back to the pool
}

func (p *kpipe) close() {
	_ = syscall.Close(p.r)
	_ = syscall.Close(p.w)
}

// pipePool keeps a few empty pipes for the next transfer, each for at most pipeIdle; a pipe
// that still holds bytes (its copy failed midway) is closed instead.
type pipePool struct {
	mu   sync.Mutex
	free []*kpipe // oldest first: put appends, get takes the last
	// reap closes the pipes idle for pipeIdle; armed while free is not empty.
	reap  *time.Timer
	armed bool
}

var pipes pipePool

// newPipe makes a pipe (a variable so tests can make it fail).
var newPipe = func() (*kpipe, error) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil, errors.Join(errors.New("splice: no pipe"), err)
	}
	// A larger pipe moves more per splice; refused (pipe-user-pages-soft), the default works.
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[0]), syscall.F_SETPIPE_SZ, pipeSize)
	return &kpipe{r: fds[0], w: fds[1]}, nil
}

func (pp *pipePool) get() (*kpipe, error) {
	pp.mu.Lock()
	if n := len(pp.free); n > 0 {
		p := pp.free[n-1]
		pp.free = pp.free[:n-1]
		pp.mu.Unlock()
		return p, nil
	}
	pp.mu.Unlock()
	return newPipe()
}

func (pp *pipePool) put(p *kpipe) {
	if p.data != 0 {
		p.close()
		return
	}
	p.idle = time.Now()
	pp.mu.Lock()
	if len(pp.free) < maxFreePipes {
		pp.free = append(pp.free, p)
		p = nil
		if !pp.armed {
			pp.armed = true
			if pp.reap == nil {
				pp.reap = time.AfterFunc(pipeIdle, pp.expire)
			} else {
				pp.reap.Reset(pipeIdle)
			}
		}
	}
	pp.mu.Unlock()
	if p != nil {
		p.close()
	}
}

// expire closes the pipes idle for pipeIdle and waits for the next one to be.
func (pp *pipePool) expire() {
	now := time.Now()
	pp.mu.Lock()
	n := 0
	for n < len(pp.free) && now.Sub(pp.free[n].idle) >= pipeIdle {
		n++
	}
	old := slices.Clone(pp.free[:n])
	pp.free = slices.Delete(pp.free, 0, n)
	if len(pp.free) > 0 {
		pp.reap.Reset(pipeIdle - now.Sub(pp.free[0].idle))
	} else {
		pp.armed = false
	}
	pp.mu.Unlock()
	for _, p := range old {
		p.close()
	}
}

// idle is the number of pipes waiting in the pool.
func (pp *pipePool) idle() int {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return len(pp.free)
}
