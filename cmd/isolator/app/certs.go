package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/isolator-dev/isolator/certs"
)

func newCertsCommand(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Inspect and rotate the webhook's serving certificates",
		Long: `The apiserver trusts isolator's webhook only through the caBundle in its webhook
configurations. These commands check the whole chain and force rotations.
docs/certificates.md explains both certificate modes.`,
		Example: `  isolator certs check --kubeconfig ~/.kube/config
  isolator certs rotate --kubeconfig ~/.kube/config --ca --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError("name a subcommand: check or rotate")
		},
	}
	cmd.AddCommand(newCertsCheckCommand(s), newCertsRotateCommand(s))
	return cmd
}

type certsCheckOptions struct {
	kubeconfig string
	namespace  string
	mode       string
	webhookURL string
}

func newCertsCheckCommand(s streams) *cobra.Command {
	o := certsCheckOptions{}
	cmd := &cobra.Command{
		Use:   "check --kubeconfig K [--namespace isolator-system]",
		Short: "Diagnose the serving certificate chain: issuer, Secret, caBundles, served certificate, expiry",
		Long: `Check, in order, everything the apiserver needs to call isolator's webhook over TLS:

  cert-manager mode  the Certificate writing Secret isolator-webhook-tls is Ready
  both modes         the Secret holds a valid key pair naming the Service
  self mode          a CA rotation's progress, and what each replica reports serving
  both modes         each webhook of the isolator Mutating and Validating webhook
                     configurations has a caBundle that trusts the Secret's certificate
  both modes         the certificate the webhook serves NOW verifies against every
                     caBundle, for the name the apiserver checks

The served certificate is read through the apiserver's service proxy (GET
/serving-certificate on Service isolator-webhook, port https), or with
--webhook-url from a TLS handshake with that address (a local run).

The mode is detected from the Secret (annotation isolator.dev/cert-mode=self, or
cert-manager.io/certificate-name) and can be forced with --mode.

Prints a checklist. Exit 0 when nothing failed (warnings allowed), 1 when an item
failed, 2 on usage errors.`,
		Example: `  # Check a cluster
  isolator certs check --kubeconfig ~/.kube/config

  # A webhook running locally on port 9443, registered with a URL
  isolator certs check --kubeconfig ~/.kube/config --webhook-url https://127.0.0.1:9443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch o.mode {
			case "", certs.ModeCertManager, certs.ModeSelf:
			default:
				return usageError("--mode must be cert-manager or self, not %q", o.mode)
			}
			return runCertsCheck(cmd.Context(), s, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses $KUBECONFIG or the in-cluster service account")
	fs.StringVarP(&o.namespace, "namespace", "n", "isolator-system", "isolator's namespace (Secret, Service, Certificate)")
	fs.StringVar(&o.mode, "mode", "", "certificate mode: cert-manager or self; empty detects it")
	fs.StringVar(&o.webhookURL, "webhook-url", "", "read the served certificate from a TLS handshake with this URL instead of through the service proxy (local runs)")
	return cmd
}

func certsClients(kubeconfig string) (*rest.Config, client.Client, kubernetes.Interface, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, nil, nil, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, nil, nil, err
	}
	if err := cmapi.AddToScheme(scheme); err != nil {
		return nil, nil, nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connecting to the cluster: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connecting to the cluster: %w", err)
	}
	return cfg, c, cs, nil
}

func runCertsCheck(ctx context.Context, s streams, o certsCheckOptions) error {
	_, c, cs, err := certsClients(o.kubeconfig)
	if err != nil {
		return failure(err)
	}
	f := certs.Inspect(ctx, c, cs, certs.InspectOptions{Namespace: o.namespace, Mode: o.mode, WebhookURL: o.webhookURL})
	items := certs.Diagnose(f)
	fmt.Fprintf(s.out, "isolator serving certificates in namespace %s (mode %s)\n", o.namespace, f.Mode)
	fmt.Fprint(s.out, certs.Render(items))
	if !certs.Healthy(items) {
		return failure(errors.New(""))
	}
	return nil
}

type certsRotateOptions struct {
	kubeconfig string
	namespace  string
	ca         bool
	wait       bool
	timeout    time.Duration
}

func newCertsRotateCommand(s streams) *cobra.Command {
	o := certsRotateOptions{}
	cmd := &cobra.Command{
		Use:   "rotate --kubeconfig K [--ca] [--wait]",
		Short: "Force a rotation of the self-managed serving certificate (or of its CA)",
		Long: `Ask the elected webhook replica (--cert-mode=self) to rotate now: it sets the
annotation isolator.dev/rotate on Secret isolator-webhook-tls, which the leader
acts on within seconds and then removes.

Without --ca, a new serving certificate from the same CA replaces the current one;
every replica switches to it without a restart.

With --ca, a new CA is created and rotated in with overlap: it joins the caBundle
first, signs a new serving certificate only after --cert-propagation-delay, and the
old CA leaves the caBundle only once every replica reports serving the new
certificate. --wait follows the rotation until it is complete.

In cert-manager mode, use cert-manager's tools instead (cmctl renew).`,
		Example: `  # New serving certificate now
  isolator certs rotate --kubeconfig ~/.kube/config

  # New CA, and wait until the old one has left the caBundle
  isolator certs rotate --kubeconfig ~/.kube/config --ca --wait --timeout 5m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.timeout <= 0 {
				return usageError("--timeout must be positive, not %s", o.timeout)
			}
			return runCertsRotate(cmd.Context(), s, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses $KUBECONFIG or the in-cluster service account")
	fs.StringVarP(&o.namespace, "namespace", "n", "isolator-system", "isolator's namespace (Secret isolator-webhook-tls)")
	fs.BoolVar(&o.ca, "ca", false, "rotate the CA (with overlap), not only the serving certificate")
	fs.BoolVar(&o.wait, "wait", false, "wait until the rotation is complete")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "with --wait, how long to wait")
	return cmd
}

func runCertsRotate(ctx context.Context, s streams, o certsRotateOptions) error {
	_, c, _, err := certsClients(o.kubeconfig)
	if err != nil {
		return failure(err)
	}
	kind := certs.RotateLeaf
	if o.ca {
		kind = certs.RotateCA
	}
	key := types.NamespacedName{Namespace: o.namespace, Name: certs.SecretName}
	sec := &corev1.Secret{}
	if err := c.Get(ctx, key, sec); err != nil {
		if apierrors.IsNotFound(err) {
			return failure(fmt.Errorf("secret %s not found: is the webhook running with --cert-mode=self in %s?", key, o.namespace))
		}
		return failure(fmt.Errorf("reading Secret %s: %w", key, err))
	}
	if sec.Annotations[certs.AnnotationMode] != certs.ModeSelf {
		return failure(fmt.Errorf("secret %s is not managed by isolator --cert-mode=self (no annotation %s=%s); in cert-manager mode run `cmctl renew -n %s <certificate>`",
			key, certs.AnnotationMode, certs.ModeSelf, o.namespace))
	}
	before, _ := certs.ParseMaterial(sec)
	patch := client.MergeFrom(sec.DeepCopy())
	sec.Annotations[certs.AnnotationRotate] = kind
	if err := c.Patch(ctx, sec, patch); err != nil {
		return failure(fmt.Errorf("requesting the rotation on Secret %s: %w", key, err))
	}
	fmt.Fprintf(s.out, "requested a %s rotation (annotation %s=%s on Secret %s)\n", kind, certs.AnnotationRotate, kind, key)
	if !o.wait {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	done := func(m *certs.Material) (bool, string) {
		if m.Rotate != "" {
			return false, "waiting for the elected webhook replica to act"
		}
		if kind == certs.RotateLeaf {
			return m.Leaf != nil && (before.Leaf == nil || !m.Leaf.Cert.Equal(before.Leaf.Cert)), "waiting for the new serving certificate"
		}
		switch {
		case m.Next != nil:
			return false, "new CA in the caBundle; waiting for the propagation delay"
		case m.Signer == nil || (before.Signer != nil && m.Signer.Cert.Equal(before.Signer.Cert)):
			return false, "waiting for the new CA"
		case len(m.Bundle) > 1:
			return false, "new CA signs; waiting for every replica to serve its certificate"
		}
		return true, ""
	}
	last := ""
	for {
		cur := &corev1.Secret{}
		if err := c.Get(ctx, key, cur); err != nil && ctx.Err() == nil {
			return failure(fmt.Errorf("reading Secret %s: %w", key, err))
		}
		m, _ := certs.ParseMaterial(cur)
		ok, state := done(m)
		if ok {
			fmt.Fprintf(s.out, "rotation complete: serving certificate serial %s\n", certs.Serial(m.Leaf.Cert))
			return nil
		}
		if state != last {
			fmt.Fprintln(s.out, state)
			last = state
		}
		select {
		case <-ctx.Done():
			return failure(fmt.Errorf("the rotation did not complete within %s (%s); `isolator certs check` shows where it stands", o.timeout, state))
		case <-time.After(500 * time.Millisecond):
		}
	}
}
