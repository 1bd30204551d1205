package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/isolator-dev/isolator/certs"
	"github.com/isolator-dev/isolator/internal/version"
	"github.com/isolator-dev/isolator/webhook"
	"github.com/isolator-dev/isolator/webhook/backstopsync"
)

type webhookOptions struct {
	kubeconfig     string
	namespace      string
	certDir        string
	certMode       string
	port           int
	host           string
	metricsAddr    string
	healthAddr     string
	leaderElect    bool
	backstop       bool
	owner          string
	teamPolicies   bool
	http2          bool
	shutdownDelay  time.Duration
	shutdownBudget time.Duration
	self           selfCertOptions
	log            logOptions
}

// selfCertOptions configure --cert-mode=self.
type selfCertOptions struct {
	extraSANs        []string
	leafLifetime     time.Duration
	caLifetime       time.Duration
	propagationDelay time.Duration
	reportTTL        time.Duration
}

func newWebhookCommand(s streams) *cobra.Command {
	o := webhookOptions{}
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Run the admission webhook that applies the policy to every new pod",
		Long: `Run isolator's admission webhook.

It serves two admission endpoints over TLS on --port:
  /mutate-pods       decides each new pod's runtimeClassName from the policy
  /validate-policy   refuses invalid policy ConfigMaps at kubectl apply

The policy is the merge of every ConfigMap in --namespace labelled
isolator.dev/policy: "true" (key policy.yaml). Changes apply without a restart;
a ConfigMap that turns invalid keeps its last good version in force and gets a
Warning Event.

The serving certificate comes from cert-manager (--cert-mode=cert-manager: the
key pair in --cert-dir, reloaded when the kubelet updates the mounted Secret), or
from isolator itself (--cert-mode=self: a CA and the certificate in Secret
isolator-webhook-tls, renewed and rotated by the elected replica, which also
injects the caBundle into isolator's webhook configurations). Also served over
TLS: GET /serving-certificate, the certificate chain in use, which
'isolator certs check' reads. docs/certificates.md explains both modes.

/readyz (on --health-probe-bind-address) turns ready once the serving
certificate, the policies and the namespace informer are loaded. On SIGTERM it
turns unready first, waits --shutdown-delay, lets in-flight admissions finish,
and exits within --shutdown-delay + --graceful-shutdown-timeout.

Metrics are on --metrics-bind-address /metrics (docs/metrics.md).`,
		Example: `  # In a cluster (the Deployment in manifests/ runs this)
  isolator webhook --namespace isolator-system --cert-dir /tmp/k8s-webhook-server/serving-certs

  # Self-managed certificates (no cert-manager): isolator keeps a CA and the serving
  # certificate in Secret isolator-webhook-tls and injects the caBundle itself
  isolator webhook --namespace isolator-system --cert-mode=self

  # Locally against a cluster, self-managed, registered with a URL on 127.0.0.1
  isolator webhook --kubeconfig ~/.kube/config --cert-mode=self --cert-extra-sans=127.0.0.1,localhost --host 127.0.0.1

  # Locally against a cluster, with a key pair in ./certs (tls.crt, tls.key)
  isolator webhook --kubeconfig ~/.kube/config --namespace isolator-system --cert-dir ./certs --leader-elect=false`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runWebhook(cmd.Context(), s, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses $KUBECONFIG or the in-cluster service account")
	fs.StringVar(&o.namespace, "namespace", "isolator-system", "namespace of the policy ConfigMaps (and of isolator's own objects)")
	fs.StringVar(&o.certDir, "cert-dir", "/tmp/k8s-webhook-server/serving-certs", "directory holding the serving key pair tls.crt and tls.key; reloaded when it changes")
	fs.StringVar(&o.certMode, "cert-mode", "cert-manager", "where the serving certificate comes from: cert-manager (files in --cert-dir, renewed by cert-manager) or self (isolator keeps a CA and the certificate in Secret isolator-webhook-tls and injects the caBundle; docs/certificates.md)")
	fs.StringSliceVar(&o.self.extraSANs, "cert-extra-sans", nil, "--cert-mode=self: extra DNS names and IP addresses in the serving certificate besides the Service's names; for local runs, e.g. 127.0.0.1,localhost")
	fs.DurationVar(&o.self.leafLifetime, "cert-lifetime", 90*24*time.Hour, "--cert-mode=self: lifetime of the serving certificate; renewed at 2/3 of it")
	fs.DurationVar(&o.self.caLifetime, "cert-ca-lifetime", 5*365*24*time.Hour, "--cert-mode=self: lifetime of the CA; rotated (with overlap) at 2/3 of it")
	fs.DurationVar(&o.self.propagationDelay, "cert-propagation-delay", 10*time.Second, "--cert-mode=self: how long a new CA must have been in the webhook configurations' caBundle before it signs the served certificate (the time apiservers take to see the change)")
	fs.DurationVar(&o.self.reportTTL, "cert-report-ttl", 30*time.Second, "--cert-mode=self: how long a replica's report of the certificate it serves counts without renewal; a dead replica holds a CA rotation back at most this long")
	fs.IntVar(&o.port, "port", 9443, "port of the admission endpoints (HTTPS)")
	fs.StringVar(&o.host, "host", "", "address to serve admissions on; empty means all")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus /metrics endpoint; 0 disables it")
	fs.StringVar(&o.healthAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "elect a leader among replicas for the cluster-wide writes (backstop, self-managed certificates); every replica serves admissions")
	fs.BoolVar(&o.teamPolicies, "team-policies", true, "read policy ConfigMaps (label isolator.dev/policy=true) in every namespace as that namespace's team policy, which can only make its pods more isolated; off, only --namespace's policies count (and the webhook needs no cluster-wide read of ConfigMaps)")
	fs.StringVar(&o.owner, "owner", "", "name of the MutatingWebhookConfiguration that owns what the webhook creates at run time (the backstop objects; with --cert-mode=self its certificate Secret and report Leases), so that removing isolator (kubectl delete -k, helm uninstall, a GitOps prune) removes them too; nothing is written while it does not exist; the manifests and the chart set isolator; empty: no owner")
	fs.BoolVar(&o.backstop, "backstop", true, "keep the fail-closed ValidatingAdmissionPolicy backstop (isolator-backstop) in step with the policy; turn off only if you apply the output of isolator policy backstop yourself (GitOps)")
	fs.BoolVar(&o.http2, "http2", true, "offer HTTP/2 on the admission port: the apiserver keeps one multiplexed connection, and on shutdown GOAWAY tells it which requests to send again (over HTTP/1.1 a request that races the close of an idle connection fails). Turn off only where policy forbids HTTP/2; docs/operations.md")
	fs.DurationVar(&o.shutdownDelay, "shutdown-delay", 2*time.Second, "on SIGTERM, how long to stay serving while unready so that endpoints drain")
	fs.DurationVar(&o.shutdownBudget, "graceful-shutdown-timeout", 7*time.Second, "on SIGTERM, how long in-flight admissions may take to finish")
	o.log.addFlags(fs)
	return cmd
}

const (
	certModeCertManager = "cert-manager"
	certModeSelf        = "self"
)

// certSource is where the webhook's serving certificate comes from.
type certSource interface {
	manager.Runnable
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	Loaded() bool
	Serving() []*x509.Certificate
}

func (o webhookOptions) validateCertFlags() error {
	switch o.certMode {
	case certModeCertManager, certModeSelf:
	default:
		return usageError("--cert-mode must be cert-manager or self, not %q", o.certMode)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--cert-lifetime", o.self.leafLifetime}, {"--cert-ca-lifetime", o.self.caLifetime}, {"--cert-report-ttl", o.self.reportTTL}} {
		if d.v <= 0 {
			return usageError("%s must be positive, not %s", d.flag, d.v)
		}
	}
	if o.self.propagationDelay < 0 {
		return usageError("--cert-propagation-delay must not be negative, not %s", o.self.propagationDelay)
	}
	if o.self.caLifetime < o.self.leafLifetime {
		return usageError("--cert-ca-lifetime (%s) must be at least --cert-lifetime (%s): a serving certificate never outlives its CA", o.self.caLifetime, o.self.leafLifetime)
	}
	for _, san := range o.self.extraSANs {
		if net.ParseIP(san) == nil && len(validation.IsDNS1123Subdomain(san)) > 0 {
			return usageError("--cert-extra-sans: %q is neither an IP address nor a DNS name", san)
		}
	}
	return nil
}

// setupSelfCerts adds self-managed mode: a source on every replica, the rotator on the
// leader.
func (o webhookOptions) setupSelfCerts(mgr manager.Manager, m *certs.Metrics, log logr.Logger) (*certs.SecretSource, error) {
	host, err := os.Hostname()
	if err != nil {
		host = "replica"
	}
	identity := certs.NewIdentity(host)
	src := certs.NewSecretSource(mgr.GetCache(), mgr.GetAPIReader(), mgr.GetClient(), o.namespace, identity, m, log.WithName("certs"))
	src.ReportTTL = o.self.reportTTL
	src.Owner = o.owner
	dns, ips := certs.ServingNames(certs.ServiceName, o.namespace, o.self.extraSANs)
	rot := certs.NewRotator(mgr.GetCache(), mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorder("isolator-webhook"), o.namespace, certs.Renewal{
		DNSNames:         dns,
		IPs:              ips,
		LeafLifetime:     o.self.leafLifetime,
		CALifetime:       o.self.caLifetime,
		PropagationDelay: o.self.propagationDelay,
		// A replica reports within a few moments of switching; a report interval covers
		// one that loaded the old certificate just before the switch.
		RetireGrace: o.self.propagationDelay + o.self.reportTTL/3,
		Poll:        time.Second,
	}, m, log.WithName("certs-rotator"))
	rot.Owner = o.owner
	if err := mgr.Add(rot); err != nil {
		return nil, err
	}
	log.Info("self-managed serving certificates", "secret", certs.SecretName, "identity", identity, "dnsNames", dns, "ips", fmt.Sprint(ips))
	return src, nil
}

func runWebhook(ctx context.Context, s streams, o webhookOptions) error {
	log, err := o.log.setup(s.err)
	if err != nil {
		return err
	}
	if err := o.validateCertFlags(); err != nil {
		return err
	}
	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return failure(err)
	}
	log.Info("starting isolator webhook", "version", version.String(), "namespace", o.namespace, "port", o.port, "certMode", o.certMode)

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return failure(err)
	}
	// Every metric of the webhook role, registered in one place with controller-runtime's
	// registry, which the manager serves on --metrics-bind-address.
	certMetrics := certs.NewMetrics(crmetrics.Registry)
	webhookMetrics := webhook.NewMetrics(crmetrics.Registry)
	backstopMetrics := backstopsync.NewMetrics(crmetrics.Registry)
	cacheOpts := webhook.CacheOptions(o.namespace, o.teamPolicies)
	if o.certMode == certModeSelf {
		maps.Copy(cacheOpts.ByObject, certs.CacheObjects(o.namespace))
	}
	// Every admission's TLS handshake calls source; in self mode it is set once the
	// manager (and so its cache) exists.
	var source certSource
	getCertificate := func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) { return source.GetCertificate(hello) }
	if o.certMode == certModeCertManager {
		fsrc := certs.NewFileSource(o.certDir, log.WithName("certs"))
		fsrc.Metrics = certMetrics
		source = fsrc
	}
	budget := o.shutdownBudget
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         cacheOpts,
		Metrics:                       metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:        o.healthAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "isolator-webhook",
		LeaderElectionNamespace:       o.namespace,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &budget,
		WebhookServer: ctrlwebhook.NewServer(ctrlwebhook.Options{
			Host:    o.host,
			Port:    o.port,
			CertDir: o.certDir,
			TLSOpts: []func(*tls.Config){func(c *tls.Config) {
				c.GetCertificate = getCertificate
				c.MinVersion = tls.VersionTLS12
				if !o.http2 {
					c.NextProtos = []string{"http/1.1"}
				}
			}},
		}),
	})
	if err != nil {
		return failure(fmt.Errorf("creating the controller manager: %w", err))
	}
	if o.certMode == certModeSelf {
		if source, err = o.setupSelfCerts(mgr, certMetrics, log); err != nil {
			return failure(err)
		}
	}
	if err := mgr.Add(source); err != nil {
		return failure(err)
	}
	mgr.GetWebhookServer().Register(certs.ServingCertificatePath, certs.ServingHandler(source.Serving))
	wh, err := webhook.Setup(mgr, webhook.Options{Namespace: o.namespace, CertLoaded: source.Loaded, Backstop: o.backstop, BackstopOwner: o.owner, TeamPolicies: o.teamPolicies,
		Metrics: webhookMetrics, BackstopMetrics: backstopMetrics})
	if err != nil {
		return failure(err)
	}
	if err := mgr.AddHealthzCheck("ping", func(_ *http.Request) error { return nil }); err != nil {
		return failure(err)
	}

	// SIGTERM: turn unready, keep serving while endpoints drain, then stop the manager,
	// which lets in-flight admissions finish within the graceful shutdown budget.
	mgrCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() {
		<-ctx.Done()
		log.Info("shutting down: readiness off, draining", "delay", o.shutdownDelay.String())
		wh.ShutDown()
		select {
		case <-time.After(o.shutdownDelay):
		case <-mgrCtx.Done():
		}
		cancel()
	}()
	if err := mgr.Start(mgrCtx); err != nil {
		return failure(fmt.Errorf("webhook stopped: %w", err))
	}
	log.Info("stopped")
	return nil
}
