package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// IsolatorNamespace is where the webhook under test reads its policy ConfigMaps.
const IsolatorNamespace = "isolator-system"

// IsolatorBinary returns the isolator binary under test: $ISOLATOR_BIN (set by make to
// bin/isolator), else it builds one from the module into a temporary directory, once
// per test binary.
func IsolatorBinary() (string, error) {
	if p := os.Getenv("ISOLATOR_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	buildOnce.Do(func() {
		root, ok := moduleRoot()
		if !ok {
			buildErr = fmt.Errorf("isolator binary: $ISOLATOR_BIN is unset and the module root was not found; run `make build`")
			return
		}
		dir, err := os.MkdirTemp("", "isolator-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtPath = filepath.Join(dir, "isolator")
		cmd := exec.Command("go", "build", "-o", builtPath, "./cmd/isolator")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building isolator: %w\n%s", err, out)
		}
	})
	return builtPath, buildErr
}

var (
	buildOnce sync.Once
	builtPath string
	buildErr  error
)

// WebhookBinary returns the binary the webhook image ships: $ISOLATOR_WEBHOOK_BIN (make
// sets it to bin/isolator-webhook) when set, else IsolatorBinary.
func WebhookBinary() (string, error) {
	if p := os.Getenv("ISOLATOR_WEBHOOK_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return IsolatorBinary()
}

// IsolatorOptions configures StartIsolator.
type IsolatorOptions struct {
	// Name tells several instances apart in logs; default "isolator".
	Name string
	// CertDir holds tls.crt and tls.key; empty generates a serving certificate for
	// 127.0.0.1 and localhost in a fresh directory.
	CertDir string
	// Args are added to the webhook's flags (e.g. "--leader-elect=true").
	Args []string
	// SelfManagedCerts runs the webhook with --cert-mode=self: it keeps its own CA and
	// serving certificate (naming 127.0.0.1, where it listens) and injects the caBundle
	// into the webhook configurations itself, so no key pair is generated here and
	// Register leaves caBundle empty.
	SelfManagedCerts bool
	// NoWait returns as soon as the process started, without waiting for /readyz.
	NoWait bool
	// Env is added to the process's environment (e.g. GOMEMLIMIT=40MiB).
	Env []string
}

// Isolator is a running `isolator webhook` process.
type Isolator struct {
	*Process
	// URL is the webhook's base URL, e.g. https://127.0.0.1:34567.
	URL string
	// MetricsURL and HealthURL are the plain-HTTP endpoints.
	MetricsURL, HealthURL string
	// CertDir holds the serving key pair; CABundle is the PEM CA that signed it (nil
	// when CertDir was given, or with SelfManagedCerts).
	CertDir  string
	CABundle []byte
}

// StartIsolator runs the real isolator webhook binary against the control plane, on
// free loopback ports, and waits until /readyz answers 200.
//
// It runs $ISOLATOR_WEBHOOK_BIN when set (make sets it to bin/isolator-webhook, the
// build the webhook image ships), else the full binary.
func (cp *ControlPlane) StartIsolator(ctx context.Context, opts IsolatorOptions) (*Isolator, error) {
	bin, err := WebhookBinary()
	if err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = "isolator"
	}
	if err := cp.ensureNamespace(ctx, IsolatorNamespace); err != nil {
		return nil, err
	}
	ports, err := FreePorts(3)
	if err != nil {
		return nil, err
	}
	iso := &Isolator{
		URL:        "https://127.0.0.1:" + strconv.Itoa(ports[0]),
		MetricsURL: "http://127.0.0.1:" + strconv.Itoa(ports[1]) + "/metrics",
		HealthURL:  "http://127.0.0.1:" + strconv.Itoa(ports[2]),
		CertDir:    opts.CertDir,
	}
	if iso.CertDir == "" && !opts.SelfManagedCerts {
		iso.CertDir = filepath.Join(cp.workDir, opts.Name+"-certs")
		ca, err := WriteServingCerts(iso.CertDir, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
		if err != nil {
			return nil, err
		}
		iso.CABundle = ca.CertPEM
	}
	args := []string{"webhook",
		"--kubeconfig", cp.kubeconfig,
		"--namespace", IsolatorNamespace,
		"--cert-dir", iso.CertDir,
		"--host", "127.0.0.1",
		"--port", strconv.Itoa(ports[0]),
		"--metrics-bind-address", "127.0.0.1:" + strconv.Itoa(ports[1]),
		"--health-probe-bind-address", "127.0.0.1:" + strconv.Itoa(ports[2]),
		"--leader-elect=false",
		"--shutdown-delay=500ms",
	}
	if opts.SelfManagedCerts {
		args = append(args, "--cert-mode=self", "--cert-extra-sans=127.0.0.1,localhost")
	}
	args = append(args, opts.Args...)
	p, err := StartProcess(ProcessSpec{Name: opts.Name, Path: bin, Args: args, Env: opts.Env, LogPath: filepath.Join(cp.logDir, opts.Name+".log")})
	if err != nil {
		return nil, err
	}
	iso.Process = p
	cp.mu.Lock()
	cp.extra = append(cp.extra, p)
	cp.mu.Unlock()
	if opts.NoWait {
		return iso, nil
	}
	if err := WaitReady(ctx, p, ReadyCheck{URL: iso.HealthURL + "/readyz"}); err != nil {
		_ = p.Stop(DefaultStopGrace)
		return nil, err
	}
	return iso, nil
}

// Metrics fetches the webhook's Prometheus text exposition.
func (iso *Isolator) Metrics(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, iso.MetricsURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetching %s: %w", iso.MetricsURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func (cp *ControlPlane) ensureNamespace(ctx context.Context, name string) error {
	_, err := cp.CreateNamespace(ctx, name, nil)
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// WebhookConfigurations reads the MutatingWebhookConfigurations and
// ValidatingWebhookConfigurations from the YAML files in dir (manifests/base), so that
// tests register exactly what users install.
func WebhookConfigurations(dir string) ([]*admissionregistrationv1.MutatingWebhookConfiguration, []*admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, nil, err
	}
	var muts []*admissionregistrationv1.MutatingWebhookConfiguration
	var vals []*admissionregistrationv1.ValidatingWebhookConfiguration
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", f, err)
			}
			var meta metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", f, err)
			}
			switch meta.Kind {
			case "MutatingWebhookConfiguration":
				m := &admissionregistrationv1.MutatingWebhookConfiguration{}
				if err := yaml.UnmarshalStrict(doc, m); err != nil {
					return nil, nil, fmt.Errorf("%s: %w", f, err)
				}
				muts = append(muts, m)
			case "ValidatingWebhookConfiguration":
				v := &admissionregistrationv1.ValidatingWebhookConfiguration{}
				if err := yaml.UnmarshalStrict(doc, v); err != nil {
					return nil, nil, fmt.Errorf("%s: %w", f, err)
				}
				vals = append(vals, v)
			}
		}
	}
	if len(muts) == 0 || len(vals) == 0 {
		return nil, nil, fmt.Errorf("%s has no Mutating and Validating WebhookConfigurations", dir)
	}
	return muts, vals, nil
}

// StartRegisteredIsolator starts the webhook (StartIsolator) and registers it from
// manifests/base (Register), as most suites begin. It returns the manifests directory.
func (cp *ControlPlane) StartRegisteredIsolator(ctx context.Context, opts IsolatorOptions) (*Isolator, string, error) {
	manifests, err := ManifestsDir()
	if err != nil {
		return nil, "", err
	}
	iso, err := cp.StartIsolator(ctx, opts)
	if err != nil {
		return nil, "", err
	}
	if err := iso.Register(ctx, cp.Client(), filepath.Join(manifests, "base")); err != nil {
		return nil, "", err
	}
	return iso, manifests, nil
}

// Register installs the webhook configurations from manifestsDir, pointed at
// this process with a URL clientConfig and its CA bundle instead of the in-cluster
// Service, and waits until the apiserver calls the mutating webhook.
func (iso *Isolator) Register(ctx context.Context, client kubernetes.Interface, manifestsDir string) error {
	return RegisterWebhooks(ctx, client, manifestsDir, iso.URL, iso.CABundle)
}

// RegisterWebhooks installs the webhook configurations from manifestsDir with a URL
// clientConfig at baseURL (e.g. a Balancer in front of several replicas) trusting
// caBundle.
func RegisterWebhooks(ctx context.Context, client kubernetes.Interface, manifestsDir, baseURL string, caBundle []byte) error {
	muts, vals, err := WebhookConfigurations(manifestsDir)
	if err != nil {
		return err
	}
	point := func(cc *admissionregistrationv1.WebhookClientConfig) {
		path := ""
		if cc.Service != nil && cc.Service.Path != nil {
			path = *cc.Service.Path
		}
		url := baseURL + path
		cc.URL, cc.Service, cc.CABundle = &url, nil, caBundle
	}
	for _, m := range muts {
		for i := range m.Webhooks {
			point(&m.Webhooks[i].ClientConfig)
		}
		if err := applyMutating(ctx, client, m); err != nil {
			return err
		}
	}
	for _, v := range vals {
		for i := range v.Webhooks {
			point(&v.Webhooks[i].ClientConfig)
		}
		if err := applyValidating(ctx, client, v); err != nil {
			return err
		}
	}
	return nil
}

func applyMutating(ctx context.Context, client kubernetes.Interface, m *admissionregistrationv1.MutatingWebhookConfiguration) error {
	api := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cur, err := api.Get(ctx, m.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = api.Create(ctx, m, metav1.CreateOptions{})
	case err == nil:
		m.ResourceVersion = cur.ResourceVersion
		_, err = api.Update(ctx, m, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("registering MutatingWebhookConfiguration %s: %w", m.Name, err)
	}
	return nil
}

func applyValidating(ctx context.Context, client kubernetes.Interface, v *admissionregistrationv1.ValidatingWebhookConfiguration) error {
	api := client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	cur, err := api.Get(ctx, v.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = api.Create(ctx, v, metav1.CreateOptions{})
	case err == nil:
		v.ResourceVersion = cur.ResourceVersion
		_, err = api.Update(ctx, v, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("registering ValidatingWebhookConfiguration %s: %w", v.Name, err)
	}
	return nil
}

// ManifestsDir returns the repository's manifests/ directory.
func ManifestsDir() (string, error) {
	root, ok := moduleRoot()
	if !ok {
		return "", fmt.Errorf("module root not found from %s", mustWd())
	}
	return filepath.Join(root, "manifests"), nil
}

func mustWd() string {
	wd, _ := os.Getwd()
	return wd
}

// WaitFor polls cond every 100ms until it returns true or an error, or until timeout.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond(ctx)
		if err == nil && ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %w)", what, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kubectl runs the kubectl that `make tools` built, as cluster admin, and returns its
// combined output. stdin may be nil.
func (cp *ControlPlane) Kubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	bin, err := Tool("kubectl")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", cp.kubeconfig}, args...)...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Apply applies manifests with `kubectl apply --server-side`, as users install them: a
// directory as a kustomization (-k), a file as it is (-f). A relative path is taken under
// the repository's manifests/ directory.
func (cp *ControlPlane) Apply(ctx context.Context, paths ...string) error {
	dir, err := ManifestsDir()
	if err != nil {
		return err
	}
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		flag := "-f"
		if info, err := os.Stat(p); err == nil && info.IsDir() {
			flag = "-k"
		}
		if _, err := cp.Kubectl(ctx, nil, "apply", "--server-side", flag, p); err != nil {
			return err
		}
	}
	return nil
}

// ManifestEnv reads an environment variable of the webhook container from the
// Deployment in manifests/base, so that a test or a measurement runs the webhook as
// installed (GOMEMLIMIT, say) without copying the value.
func ManifestEnv(name string) (string, error) {
	dir, err := ManifestsDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "base", "deployment.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	doc, _, _ := bytes.Cut(data, []byte("\n---"))
	var d appsv1.Deployment
	if err := yaml.Unmarshal(doc, &d); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == name {
				return e.Value, nil
			}
		}
	}
	return "", fmt.Errorf("%s: the webhook container sets no %s", path, name)
}
