// Package tlscert is the public listener's certificate. It is loaded from
// server.tls_cert and server.tls_key, handed to every new TLS handshake
// through GetCertificate, and replaced when the files change (polled) or on
// Reload. Connections already open keep the certificate they shook hands
// with: nothing is closed. A new pair that does not load is refused, the
// old one stays in use, and the error names the key to fix.
package tlscert

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultPoll is how often Run looks at the files.
const DefaultPoll = time.Second

// Options configure a Source.
type Options struct {
	// CertFile and KeyFile are server.tls_cert and server.tls_key.
	CertFile, KeyFile string
	// Poll is how often Run checks the files for a change; default 1s.
	Poll time.Duration
	// Log receives reload successes (info) and refusals (error); default
	// slog.Default().
	Log *slog.Logger
}

// Source holds the current certificate. It is safe for concurrent use.
type Source struct {
	o   Options
	cur atomic.Pointer[tls.Certificate]

	mu     sync.Mutex // serialises loads; guards the fields below
	stamp  [2]os.FileInfo
	sum    [sha256.Size]byte // content of the pair in use
	badSum [sha256.Size]byte // content last refused, so a bad pair is logged once
}

// New loads the pair. Its error names server.tls_cert or server.tls_key.
func New(o Options) (*Source, error) {
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	s := &Source{o: o}
	if _, err := s.load(true); err != nil {
		return nil, err
	}
	return s, nil
}

// CipherSuites are the TLS 1.2 suites offered: forward secret AEADs only
// (TLS 1.3 suites are not configurable in Go and are all AEAD).
var CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Config is the server configuration for the public listener:
// tls.NewListener(ln, src.Config()) and hand that listener to
// fasthttp.Server.Serve (ctx.IsTLS() is then true).
func (s *Source) Config() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   CipherSuites,
		GetCertificate: s.GetCertificate,
		// fasthttp speaks HTTP/1.1 only; saying so keeps ALPN clients
		// from expecting h2.
		NextProtos: []string{"http/1.1"},
	}
}

// GetCertificate returns the pair in use; it never fails once New has.
func (s *Source) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cur.Load(), nil
}

// Leaf is the certificate in use, parsed.
func (s *Source) Leaf() *x509.Certificate { return s.cur.Load().Leaf }

// Reload re-reads both files now (SIGHUP, POST /admin/reload). On error the
// pair in use stays.
func (s *Source) Reload() error {
	_, err := s.load(true)
	return err
}

// Run polls the files every Options.Poll until ctx ends, loading the pair
// again when either file's size, modification time or identity (a rename
// over it, a Kubernetes secret's symlink swap) changed.
func (s *Source) Run(ctx context.Context) {
	t := time.NewTicker(s.o.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.load(false) // errors are logged inside
		}
	}
}

// load reads the pair. Without force it returns early when neither file
// changed since the last look. A renewal tool writes the two files one
// after the other, so a poll may see a new certificate with the old key:
// that is refused (and logged once), and the next poll after the key lands
// picks up the pair.
func (s *Source) load(force bool) (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var stamp [2]os.FileInfo
	for i, f := range []struct{ key, path string }{{"server.tls_cert", s.o.CertFile}, {"server.tls_key", s.o.KeyFile}} {
		fi, err := os.Stat(f.path)
		if err != nil {
			return false, s.refuse(force, nil, fmt.Errorf("%s %q: %w", f.key, f.path, err))
		}
		stamp[i] = fi
	}
	if !force && sameStamp(s.stamp, stamp) {
		return false, nil
	}
	certPEM, keyPEM, err := readPair(s.o.CertFile, s.o.KeyFile)
	if err != nil {
		return false, s.refuse(force, nil, err)
	}
	sum := sha256.Sum256(append(append(append([]byte{}, certPEM...), 0), keyPEM...))
	if s.cur.Load() != nil && sum == s.sum {
		s.stamp = stamp // touched, not changed
		return false, nil
	}
	cert, err := parsePair(s.o.CertFile, s.o.KeyFile, certPEM, keyPEM)
	if err != nil {
		return false, s.refuse(force, sum[:], err)
	}
	first := s.cur.Load() == nil
	s.cur.Store(cert)
	s.sum, s.stamp, s.badSum = sum, stamp, [sha256.Size]byte{}
	if !first {
		s.o.Log.Info("tls certificate reloaded", "key", "server.tls_cert", "file", s.o.CertFile,
			"subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
	}
	if time.Now().After(cert.Leaf.NotAfter) {
		s.o.Log.Warn("tls certificate has expired: clients will refuse it; renew server.tls_cert",
			"file", s.o.CertFile, "not_after", cert.Leaf.NotAfter)
	}
	return true, nil
}

// refuse reports err for the pair whose content hashes to sum (nil when
// the files could not be read: the error text stands for the content).
// While polling meets the same failure it is logged once; the pair in use
// stays.
func (s *Source) refuse(force bool, content []byte, err error) error {
	if s.cur.Load() == nil {
		return err // New: the caller reports it
	}
	sum := sha256.Sum256([]byte(err.Error()))
	if content != nil {
		sum = [sha256.Size]byte(content)
	}
	if force || sum != s.badSum {
		s.badSum = sum
		s.o.Log.Error("tls certificate not reloaded; still serving the previous one", "err", err)
	}
	return err
}

func sameStamp(a, b [2]os.FileInfo) bool {
	for i := range a {
		if a[i] == nil || b[i] == nil || !os.SameFile(a[i], b[i]) ||
			a[i].Size() != b[i].Size() || !a[i].ModTime().Equal(b[i].ModTime()) {
			return false
		}
	}
	return true
}

func readPair(certFile, keyFile string) (certPEM, keyPEM []byte, err error) {
	if certPEM, err = os.ReadFile(certFile); err != nil {
		return nil, nil, fmt.Errorf("server.tls_cert %q: %w", certFile, err)
	}
	if keyPEM, err = os.ReadFile(keyFile); err != nil {
		return nil, nil, fmt.Errorf("server.tls_key %q: %w", keyFile, err)
	}
	return certPEM, keyPEM, nil
}

// parsePair turns the PEM blocks into a certificate, telling which file is
// at fault where that can be known.
func parsePair(certFile, keyFile string, certPEM, keyPEM []byte) (*tls.Certificate, error) {
	if !bytes.Contains(certPEM, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("server.tls_cert %q: no PEM CERTIFICATE block", certFile)
	}
	if !bytes.Contains(keyPEM, []byte("PRIVATE KEY-----")) {
		return nil, fmt.Errorf("server.tls_key %q: no PEM PRIVATE KEY block", keyFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("server.tls_cert %q / server.tls_key %q: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil { // filled by X509KeyPair since Go 1.23
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("server.tls_cert %q: %w", certFile, err)
		}
	}
	return &cert, nil
}

// LoadPair reads and checks a pair once, for "anqi-edge check": the files
// are readable, the key matches the certificate, and the certificate is
// valid now. Errors name server.tls_cert or server.tls_key.
func LoadPair(certFile, keyFile string, now time.Time) (*x509.Certificate, error) {
	certPEM, keyPEM, err := readPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cert, err := parsePair(certFile, keyFile, certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	leaf := cert.Leaf
	switch {
	case now.After(leaf.NotAfter):
		return leaf, fmt.Errorf("server.tls_cert %q: certificate expired at %s", certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return leaf, fmt.Errorf("server.tls_cert %q: certificate not valid before %s", certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return leaf, nil
}

// SetFiles switches to another pair of files (a reload that changed
// server.tls_cert or server.tls_key). On error the files and the pair in
// use stay.
func (s *Source) SetFiles(cert, key string) error {
	s.mu.Lock()
	old := s.o
	s.o.CertFile, s.o.KeyFile = cert, key
	s.mu.Unlock()
	if err := s.Reload(); err != nil {
		s.mu.Lock()
		s.o.CertFile, s.o.KeyFile = old.CertFile, old.KeyFile
		s.mu.Unlock()
		return err
	}
	return nil
}
