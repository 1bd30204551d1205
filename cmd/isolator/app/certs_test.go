package app

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestCertsUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"certs"}, "name a subcommand: check or rotate"},
		{"unknown mode", []string{"certs", "check", "--mode", "vault"}, `--mode must be cert-manager or self, not "vault"`},
		{"no timeout", []string{"certs", "rotate", "--wait", "--timeout", "0s"}, "--timeout must be positive"},
		{"arguments", []string{"certs", "check", "extra"}, `unknown command "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Run(context.Background(), tt.args, strings.NewReader(""), &out, &errOut)
			if code != ExitUsage {
				t.Errorf("exit %d, want %d (stderr %q)", code, ExitUsage, errOut.String())
			}
			if !strings.Contains(errOut.String(), tt.want) {
				t.Errorf("stderr %q lacks %q", errOut.String(), tt.want)
			}
		})
	}
}

func TestValidateCertFlags(t *testing.T) {
	valid := func() webhookOptions {
		return webhookOptions{certMode: certModeSelf, self: selfCertOptions{
			extraSANs: []string{"127.0.0.1", "localhost"}, leafLifetime: time.Hour, caLifetime: 10 * time.Hour,
			propagationDelay: 10 * time.Second, reportTTL: 30 * time.Second,
		}}
	}
	tests := []struct {
		name   string
		modify func(o *webhookOptions)
		want   string
	}{
		{"valid self", func(*webhookOptions) {}, ""},
		{"valid cert-manager", func(o *webhookOptions) { o.certMode = certModeCertManager }, ""},
		{"unknown mode", func(o *webhookOptions) { o.certMode = "vault" }, `--cert-mode must be cert-manager or self, not "vault"`},
		{"zero lifetime", func(o *webhookOptions) { o.self.leafLifetime = 0 }, "--cert-lifetime must be positive"},
		{"zero report ttl", func(o *webhookOptions) { o.self.reportTTL = 0 }, "--cert-report-ttl must be positive"},
		{"negative delay", func(o *webhookOptions) { o.self.propagationDelay = -time.Second }, "--cert-propagation-delay must not be negative"},
		{"CA shorter than leaf", func(o *webhookOptions) { o.self.caLifetime = time.Minute }, "--cert-ca-lifetime (1m0s) must be at least --cert-lifetime (1h0m0s)"},
		{"bad SAN", func(o *webhookOptions) { o.self.extraSANs = []string{"not a name"} }, `--cert-extra-sans: "not a name" is neither an IP address nor a DNS name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.modify(&o)
			err := o.validateCertFlags()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}
