package harness

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Balancer stands in for a Service in front of several webhook replicas, as kube-proxy
// and the endpoints controller provide in a cluster: it forwards TCP connections (TLS
// passes through untouched) round-robin to the backends whose /readyz answers 200, and
// stops sending new connections to a backend within one poll of it turning unready.
// Connections already open stay where they are, as with kube-proxy.
type Balancer struct {
	ln       net.Listener
	mu       sync.Mutex
	backends []balancerBackend
	next     atomic.Uint64
	// Connections counts the connections accepted.
	Connections atomic.Int64
}

type balancerBackend struct {
	addr    string // host:port the TLS traffic goes to
	readyz  string // URL of its readiness endpoint
	ready   bool
	removed bool
}

// NewBalancer listens on a free loopback port and polls its backends' readiness every
// interval until ctx ends.
func NewBalancer(ctx context.Context, interval time.Duration) (*Balancer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &Balancer{ln: ln}
	go b.serve()
	go b.poll(ctx, interval)
	go func() { <-ctx.Done(); _ = ln.Close() }()
	return b, nil
}

// Addr is the balancer's host:port.
func (b *Balancer) Addr() string { return b.ln.Addr().String() }

// Add puts an isolator replica behind the balancer; it gets traffic once ready.
func (b *Balancer) Add(iso *Isolator) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = append(b.backends, balancerBackend{addr: iso.URL[len("https://"):], readyz: iso.HealthURL + "/readyz"})
}

// Remove stops sending new connections to the replica, as when its pod is deleted.
func (b *Balancer) Remove(iso *Isolator) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.backends {
		if b.backends[i].addr == iso.URL[len("https://"):] {
			b.backends[i].removed = true
		}
	}
}

func (b *Balancer) poll(ctx context.Context, interval time.Duration) {
	client := &http.Client{Timeout: interval}
	for {
		b.mu.Lock()
		urls := make([]string, len(b.backends))
		for i, be := range b.backends {
			urls[i] = be.readyz
		}
		b.mu.Unlock()
		for i, u := range urls {
			ok := false
			if resp, err := client.Get(u); err == nil {
				ok = resp.StatusCode == http.StatusOK
				_ = resp.Body.Close()
			}
			b.mu.Lock()
			b.backends[i].ready = ok
			b.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

func (b *Balancer) pick() (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ready []string
	for _, be := range b.backends {
		if be.ready && !be.removed {
			ready = append(ready, be.addr)
		}
	}
	if len(ready) == 0 {
		return "", false
	}
	return ready[b.next.Add(1)%uint64(len(ready))], true
}

func (b *Balancer) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.Connections.Add(1)
		go b.forward(c)
	}
}

func (b *Balancer) forward(c net.Conn) {
	defer c.Close()
	addr, ok := b.pick()
	if !ok {
		return // no ready endpoint: the connection is refused, as by kube-proxy
	}
	up, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}
