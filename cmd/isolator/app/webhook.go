package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/isolator-dev/isolator/certs"
	"github.com/isolator-dev/isolator/internal/version"
	"github.com/isolator-dev/isolator/webhook"
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
	shutdownDelay  time.Duration
	shutdownBudget time.Duration
	log            logOptions
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

/readyz (on --health-probe-bind-address) turns ready once the serving
certificate, the policies and the namespace informer are loaded. On SIGTERM it
turns unready first, waits --shutdown-delay, lets in-flight admissions finish,
and exits within --shutdown-delay + --graceful-shutdown-timeout.

Metrics are on --metrics-bind-address /metrics (docs/metrics.md).`,
		Example: `  # In a cluster (the Deployment in manifests/ runs this)
  isolator webhook --namespace isolator-system --cert-dir /tmp/k8s-webhook-server/serving-certs

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
	fs.StringVar(&o.certMode, "cert-mode", "cert-manager", "where the serving certificate comes from: cert-manager (files in --cert-dir, renewed by cert-manager) or self")
	fs.IntVar(&o.port, "port", 9443, "port of the admission endpoints (HTTPS)")
	fs.StringVar(&o.host, "host", "", "address to serve admissions on; empty means all")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus /metrics endpoint; 0 disables it")
	fs.StringVar(&o.healthAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "elect a leader among replicas for the cluster-wide writes (backstop, self-managed certificates); every replica serves admissions")
	fs.DurationVar(&o.shutdownDelay, "shutdown-delay", 2*time.Second, "on SIGTERM, how long to stay serving while unready so that endpoints drain")
	fs.DurationVar(&o.shutdownBudget, "graceful-shutdown-timeout", 7*time.Second, "on SIGTERM, how long in-flight admissions may take to finish")
	o.log.addFlags(fs)
	return cmd
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("reading kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("no cluster to talk to: pass --kubeconfig, set $KUBECONFIG, or run in a pod (%w)", err)
	}
	return cfg, nil
}

func runWebhook(ctx context.Context, s streams, o webhookOptions) error {
	log, err := o.log.setup(s.err)
	if err != nil {
		return err
	}
	if o.certMode != "cert-manager" {
		return usageError("--cert-mode must be cert-manager, not %q", o.certMode)
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
	certSource := certs.NewFileSource(o.certDir, log.WithName("certs"))
	budget := o.shutdownBudget
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         webhook.CacheOptions(o.namespace),
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
				c.GetCertificate = certSource.GetCertificate
				c.MinVersion = tls.VersionTLS12
			}},
		}),
	})
	if err != nil {
		return failure(fmt.Errorf("creating the controller manager: %w", err))
	}
	if err := mgr.Add(certSource); err != nil {
		return failure(err)
	}
	wh, err := webhook.Setup(mgr, webhook.Options{Namespace: o.namespace, CertLoaded: certSource.Loaded})
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
