package certs

import (
	"crypto/x509"
	"net/http"
)

// ServingCertificatePath is where the webhook server publishes the certificate chain it
// serves (public data: every TLS handshake shows it too). `isolator certs check` reads it
// through the apiserver's service proxy, which terminates TLS and so cannot show the
// handshake's certificate itself.
const ServingCertificatePath = "/serving-certificate"

// ServingHandler answers GET with the PEM chain that serving returns, 503 before a
// certificate is loaded.
func ServingHandler(serving func() []*x509.Certificate) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "only GET", http.StatusMethodNotAllowed)
			return
		}
		chain := serving()
		if len(chain) == 0 {
			http.Error(w, ErrNotLoaded.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(EncodeCertificates(chain))
	})
}
