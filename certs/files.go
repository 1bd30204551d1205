package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

// Names of the key pair files in the certificate directory (a kubernetes.io/tls Secret).
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	CAFile   = "ca.crt"
)

// ErrNotLoaded is returned to TLS handshakes before the first key pair is loaded.
var ErrNotLoaded = errors.New("isolator: serving certificate not loaded yet")

// FileSource serves the key pair kept in a directory. It waits for the files to appear
// (a Secret volume may be populated after start), then reloads them whenever they change,
// including the kubelet's atomic ..data symlink swap. A pair that fails to parse (a
// half-written update) is ignored and the previous one keeps serving.
type FileSource struct {
	Dir string
	// Interval is how often the files are re-read in addition to file events.
	Interval time.Duration
	Log      logr.Logger
	// Metrics, if set, get the expiry of the served certificate and of its CA (ca.crt).
	Metrics *Metrics

	watcher atomic.Pointer[certwatcher.CertWatcher]
}

// NewFileSource serves tls.crt and tls.key from dir.
func NewFileSource(dir string, log logr.Logger) *FileSource {
	return &FileSource{Dir: dir, Interval: 2 * time.Second, Log: log}
}

// GetCertificate is a tls.Config.GetCertificate.
func (f *FileSource) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	w := f.watcher.Load()
	if w == nil {
		return nil, ErrNotLoaded
	}
	return w.GetCertificate(hello)
}

// Loaded reports whether a key pair has been loaded.
func (f *FileSource) Loaded() bool { return f.watcher.Load() != nil }

// Serving returns the certificate chain served now, nil before the first load.
func (f *FileSource) Serving() []*x509.Certificate {
	w := f.watcher.Load()
	if w == nil {
		return nil
	}
	c, err := w.GetCertificate(nil)
	if err != nil || c == nil {
		return nil
	}
	var chain []*x509.Certificate
	for _, der := range c.Certificate {
		if x, err := x509.ParseCertificate(der); err == nil {
			chain = append(chain, x)
		}
	}
	return chain
}

// observe records the expiry of a newly loaded pair and of the CA in ca.crt that signed it.
func (f *FileSource) observe(c tls.Certificate) {
	leaf := c.Leaf
	if leaf == nil && len(c.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	if leaf == nil {
		return
	}
	bundle, _ := ParseCertificates(readOptional(filepath.Join(f.Dir, CAFile)))
	f.Metrics.observeServing(leaf, bundle)
	f.Log.Info("serving certificate loaded", "dir", f.Dir, "serial", Serial(leaf), "notAfter", leaf.NotAfter.UTC().Format(time.RFC3339))
}

func readOptional(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// Start waits for the key pair, loads it, and watches it until ctx ends.
func (f *FileSource) Start(ctx context.Context) error {
	certPath, keyPath := filepath.Join(f.Dir, CertFile), filepath.Join(f.Dir, KeyFile)
	var w *certwatcher.CertWatcher
	lastLog := time.Time{}
	for {
		var err error
		w, err = certwatcher.New(certPath, keyPath)
		if err == nil {
			break
		}
		if time.Since(lastLog) > 10*time.Second {
			f.Log.Info("waiting for the serving certificate", "dir", f.Dir, "problem", err.Error(),
				"hint", "mount the isolator-webhook-tls Secret there (cert-manager mode) or run with --cert-mode=self")
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
	if f.Interval > 0 {
		w = w.WithWatchInterval(f.Interval)
	}
	// RegisterCallback calls back once for the pair already loaded, then on every reload.
	w.RegisterCallback(f.observe)
	f.watcher.Store(w)
	if err := w.Start(ctx); err != nil {
		return fmt.Errorf("watching the serving certificate in %s: %w", f.Dir, err)
	}
	return nil
}

// NeedLeaderElection is false: every replica serves.
func (f *FileSource) NeedLeaderElection() bool { return false }

// Exists reports whether dir already holds a key pair.
func Exists(dir string) bool {
	_, err1 := os.Stat(filepath.Join(dir, CertFile))
	_, err2 := os.Stat(filepath.Join(dir, KeyFile))
	return err1 == nil && err2 == nil
}
