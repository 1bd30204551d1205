package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Component names one server of the control plane. Its value is also the name of its
// binary and of its log file (<value>.log).
type Component string

// The components, in start order: each needs the ones before it.
const (
	Etcd              Component = "etcd"
	APIServer         Component = "kube-apiserver"
	ControllerManager Component = "kube-controller-manager"
)

// AllComponents is what Start runs when Options.Components is empty.
var AllComponents = []Component{Etcd, APIServer, ControllerManager}

const (
	// ServiceAccountIssuer is the issuer (and audience) of the service account tokens the
	// apiserver signs.
	ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"
	// ServiceClusterIPRange is the range Services get their cluster IPs from.
	ServiceClusterIPRange = "10.0.0.0/24"
	// AdminUser is the user name of the admin client certificate (group system:masters).
	AdminUser = "isolator-e2e-admin"

	// defaultStartTimeout bounds the wait for each component to turn ready. The apiserver
	// needs a few seconds on an idle machine, and much longer on 2 cores shared with
	// compiles.
	defaultStartTimeout = 2 * time.Minute
)

// controllers are the kube-controller-manager controllers the tests rely on: workload
// controllers create pods as a cluster does (so pods arrive at admission from a
// controller's service account), the service account controllers make namespaces usable,
// clusterrole aggregation fills admin/edit/view for tests acting as non-admin users, and the
// ValidatingAdmissionPolicy status controller reports type-checking of admission policies.
// The node lifecycle controller is left out on purpose: there is no kubelet, and it would
// taint every Node object that tests create.
var controllers = []string{
	"deployment-controller", "replicaset-controller", "statefulset-controller",
	"daemonset-controller", "job-controller", "cronjob-controller",
	"serviceaccount-controller", "serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller", "namespace-controller",
	"garbage-collector-controller", "clusterrole-aggregation-controller",
	"validatingadmissionpolicy-status-controller",
}

// Options configures Start. The zero value starts etcd, kube-apiserver and
// kube-controller-manager with the binaries from `make tools`.
type Options struct {
	// Components to run; empty means AllComponents. Each component needs the ones before it
	// in AllComponents, so the useful choices are {Etcd, APIServer} and all three.
	Components []Component
	// APIServerFlags are added after the harness's own kube-apiserver flags, so a
	// single-valued flag given here wins, e.g. "--admission-control-config-file=...".
	APIServerFlags []string
	// ControllerManagerFlags are added after the harness's own kube-controller-manager
	// flags.
	ControllerManagerFlags []string
	// LogDir receives one <component>.log per component. Empty means a directory inside
	// the work directory, removed by Stop.
	LogDir string
	// ToolsBin holds kube-apiserver and kube-controller-manager. Empty means
	// $ISOLATOR_TOOLS_BIN, else ~/.cache/isolator/bin (where `make tools` puts them).
	ToolsBin string
	// EtcdPath is the etcd binary. Empty means etcd on $PATH, else /usr/bin/etcd.
	EtcdPath string
	// StartTimeout bounds the wait for each component to become ready; default 2m.
	StartTimeout time.Duration
}

// ControlPlane is a running etcd, kube-apiserver and (optionally) kube-controller-manager
// on loopback ports, with their own CA and certificates in a fresh work directory.
type ControlPlane struct {
	opts        Options
	workDir     string
	logDir      string
	etcdDataDir string
	ca          *CA
	url         string
	kubeconfig  string
	restConfig  *rest.Config
	client      kubernetes.Interface

	mu    sync.Mutex
	procs map[Component]*Process
	// extra are processes started against the control plane (isolator webhooks); they
	// stop first.
	extra   []*Process
	specs   map[Component]ProcessSpec
	ready   map[Component]ReadyCheck
	stopped bool
}

// Start starts the control plane and returns once every component is ready: the
// apiserver's /readyz answers 200, the controller-manager's /healthz answers 200 and it
// has created the "default" ServiceAccount. On error nothing is left running.
//
// ctx bounds only the start; the processes run until Stop (or until the program exits).
func Start(ctx context.Context, opts Options) (*ControlPlane, error) {
	cp, err := start(ctx, opts)
	if err != nil {
		if cp != nil {
			cp.removeWorkDir()
		}
		return nil, err
	}
	return cp, nil
}

// start is Start without removing the work directory on failure, so that the test
// wrapper can save the logs first. It returns the stopped control plane with the error.
func start(ctx context.Context, opts Options) (*ControlPlane, error) {
	components, err := checkComponents(opts.Components)
	if err != nil {
		return nil, err
	}
	opts.Components = components
	if opts.StartTimeout == 0 {
		opts.StartTimeout = defaultStartTimeout
	}
	bins, err := findBinaries(opts)
	if err != nil {
		return nil, err
	}

	workDir, err := makeTempDir(os.TempDir(), "work")
	if err != nil {
		return nil, fmt.Errorf("control plane work directory: %w", err)
	}
	cp := &ControlPlane{
		opts:    opts,
		workDir: workDir,
		logDir:  opts.LogDir,
		procs:   map[Component]*Process{},
		specs:   map[Component]ProcessSpec{},
		ready:   map[Component]ReadyCheck{},
	}
	if cp.logDir == "" {
		cp.logDir = filepath.Join(workDir, "logs")
	}
	if err := os.MkdirAll(cp.logDir, 0o755); err != nil {
		return cp, fmt.Errorf("control plane log directory: %w", err)
	}
	if err := cp.run(ctx, bins); err != nil {
		if stopErr := cp.stopProcesses(); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
		return cp, err
	}
	return cp, nil
}

func (cp *ControlPlane) run(ctx context.Context, bins map[Component]string) error {
	ports, err := FreePorts(4)
	if err != nil {
		return err
	}
	etcdClientPort, etcdPeerPort, apiPort, cmPort := ports[0], ports[1], ports[2], ports[3]

	if err := cp.startEtcd(ctx, bins[Etcd], etcdClientPort, etcdPeerPort); err != nil {
		return err
	}
	if !slices.Contains(cp.opts.Components, APIServer) {
		return nil
	}
	if err := cp.writePKI(); err != nil {
		return err
	}
	if err := cp.startAPIServer(ctx, bins[APIServer], apiPort, etcdClientPort); err != nil {
		return err
	}
	if !slices.Contains(cp.opts.Components, ControllerManager) {
		return nil
	}
	return cp.startControllerManager(ctx, bins[ControllerManager], cmPort)
}

func checkComponents(cs []Component) ([]Component, error) {
	if len(cs) == 0 {
		return AllComponents, nil
	}
	for _, c := range cs {
		if !slices.Contains(AllComponents, c) {
			return nil, fmt.Errorf("Options.Components: unknown component %q; known: %v", c, AllComponents)
		}
	}
	// Each component needs all the ones before it.
	for i, c := range AllComponents {
		if !slices.Contains(cs, c) {
			for _, later := range AllComponents[i+1:] {
				if slices.Contains(cs, later) {
					return nil, fmt.Errorf("Options.Components: %s needs %s; add it", later, c)
				}
			}
			return AllComponents[:i], nil
		}
	}
	return AllComponents, nil
}

// FreePorts returns n distinct loopback ports that are free now. A port is only claimed
// when the server binds it, so it must not be taken in between: the kernel hands out
// ports of its ephemeral range (ip_local_port_range) to every outgoing connection, and
// a busy apiserver opens many. So ports are drawn at random from below that range, where
// only a server that names its port could take one; where that range starts too low to
// leave room, the kernel picks instead.
func FreePorts(n int) ([]int, error) {
	low, high := portRangeBelowEphemeral()
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for attempt := 0; len(ports) < n; attempt++ {
		addr := "127.0.0.1:0"
		if high > low && attempt < 100*n {
			addr = fmt.Sprintf("127.0.0.1:%d", low+rand.IntN(high-low))
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			if addr == "127.0.0.1:0" {
				return nil, fmt.Errorf("find a free loopback port: %w", err)
			}
			continue // taken; draw again
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// portRangeBelowEphemeral is [10000, start of the kernel's ephemeral range), or an empty
// range when that can't be read or leaves fewer than 1000 ports.
func portRangeBelowEphemeral() (low, high int) {
	const floor = 10000
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	fields := strings.Fields(string(data))
	if len(fields) != 2 {
		return 0, 0
	}
	start, err := strconv.Atoi(fields[0])
	if err != nil || start-floor < 1000 {
		return 0, 0
	}
	return floor, start
}

func (cp *ControlPlane) startEtcd(ctx context.Context, bin string, clientPort, peerPort int) error {
	dataDir, err := etcdDataDir(cp.workDir)
	if err != nil {
		return err
	}
	cp.etcdDataDir = dataDir
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	spec := ProcessSpec{
		Name: string(Etcd),
		Path: bin,
		Args: []string{
			"--name=default",
			"--data-dir=" + dataDir,
			"--listen-client-urls=" + clientURL,
			"--advertise-client-urls=" + clientURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=default=" + peerURL,
			"--initial-cluster-state=new",
			"--logger=zap",
			"--log-outputs=stderr",
		},
		LogPath: cp.LogPath(Etcd),
	}
	return cp.startAndWait(ctx, Etcd, spec, ReadyCheck{URL: clientURL + "/health"})
}

// etcdDataDir puts etcd's data in memory when /dev/shm is there: Debian's etcd 3.4 has no
// --unsafe-no-fsync, and fsync on a disk shared with compiles makes every write slow.
func etcdDataDir(workDir string) (string, error) {
	if dir, err := makeTempDir("/dev/shm", "etcd"); err == nil {
		return dir, nil
	}
	dir := filepath.Join(workDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("etcd data directory: %w", err)
	}
	return dir, nil
}

// pki holds the paths of the files writePKI writes.
func (cp *ControlPlane) pki(name string) string { return filepath.Join(cp.workDir, "pki", name) }

func (cp *ControlPlane) writePKI() error {
	ca, err := NewCA("isolator-e2e-ca")
	if err != nil {
		return err
	}
	cp.ca = ca
	serving, err := ca.IssueServing(
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		// 10.0.0.1 is the first address of ServiceClusterIPRange: the kubernetes Service.
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 0, 0, 1)})
	if err != nil {
		return err
	}
	saKey, saPub, err := newServiceAccountKey()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(cp.pki("ca.crt")), 0o700); err != nil {
		return fmt.Errorf("control plane certificates: %w", err)
	}
	files := map[string][]byte{
		"ca.crt":        ca.CertPEM,
		"apiserver.crt": serving.CertPEM,
		"apiserver.key": serving.KeyPEM,
		"sa.key":        saKey,
		"sa.pub":        saPub,
	}
	for name, data := range files {
		if err := writeFileAtomic(cp.pki(name), data, 0o600); err != nil {
			return fmt.Errorf("control plane certificates: %w", err)
		}
	}
	return nil
}

func (cp *ControlPlane) startAPIServer(ctx context.Context, bin string, port, etcdPort int) error {
	cp.url = fmt.Sprintf("https://127.0.0.1:%d", port)
	admin, err := cp.ca.IssueClient(AdminUser, "system:masters")
	if err != nil {
		return err
	}
	cp.kubeconfig = filepath.Join(cp.workDir, "admin.kubeconfig")
	if err := cp.writeKubeconfig(cp.kubeconfig, AdminUser, admin); err != nil {
		return err
	}
	if cp.restConfig, err = clientcmd.BuildConfigFromFlags("", cp.kubeconfig); err != nil {
		return fmt.Errorf("admin client config from %s: %w", cp.kubeconfig, err)
	}
	// Tests create objects in bursts; client-side throttling would only slow them down.
	cp.restConfig.QPS, cp.restConfig.Burst = 200, 400
	if cp.client, err = kubernetes.NewForConfig(cp.restConfig); err != nil {
		return fmt.Errorf("admin clientset: %w", err)
	}

	args := []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// The endpoint reconciler refuses a loopback advertise address, and nothing in the
		// tests reaches the apiserver through the kubernetes Service.
		"--endpoint-reconciler-type=none",
		// Webhooks and aggregated APIs named by a Service are reached at the Service's
		// endpoints, not its cluster IP. Nothing here routes the service range locally,
		// so a call to a cluster IP would leave the machine; with no endpoints (there is
		// no kubelet to run a Service's pods), such a call fails at once, locally.
		"--enable-aggregator-routing=true",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(cp.workDir, "kube-apiserver"),
		"--tls-cert-file=" + cp.pki("apiserver.crt"),
		"--tls-private-key-file=" + cp.pki("apiserver.key"),
		"--client-ca-file=" + cp.pki("ca.crt"),
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=" + ServiceAccountIssuer,
		"--api-audiences=" + ServiceAccountIssuer,
		"--service-account-key-file=" + cp.pki("sa.pub"),
		"--service-account-signing-key-file=" + cp.pki("sa.key"),
		"--service-cluster-ip-range=" + ServiceClusterIPRange,
		"--allow-privileged=true",
		"--profiling=false",
		// Without it a SIGTERM waits for the open watches (the controller-manager's, a
		// webhook's informers) until the request timeout, a minute; with it the apiserver
		// ends them and exits in about a second, so restarts stay quick and graceful.
		"--shutdown-watch-termination-grace-period=1s",
	}
	spec := ProcessSpec{
		Name:    string(APIServer),
		Path:    bin,
		Args:    append(args, cp.opts.APIServerFlags...),
		LogPath: cp.LogPath(APIServer),
	}
	tlsConfig, err := cp.adminTLS(admin)
	if err != nil {
		return err
	}
	return cp.startAndWait(ctx, APIServer, spec, ReadyCheck{URL: cp.url + "/readyz", TLS: tlsConfig})
}

func (cp *ControlPlane) adminTLS(admin KeyPair) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(admin.CertPEM, admin.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("admin client certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cp.ca.Cert)
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func (cp *ControlPlane) startControllerManager(ctx context.Context, bin string, port int) error {
	// The controller-manager's own identity, which the bootstrap RBAC policy grants what
	// it needs; with --use-service-account-credentials each controller then acts as its
	// own service account in kube-system, as in a real cluster.
	const user = "system:kube-controller-manager"
	pair, err := cp.ca.IssueClient(user)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(cp.workDir, "kube-controller-manager.kubeconfig")
	if err := cp.writeKubeconfig(kubeconfig, user, pair); err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(cp.workDir, "kube-controller-manager"),
		"--service-account-private-key-file=" + cp.pki("sa.key"),
		"--root-ca-file=" + cp.pki("ca.crt"),
		"--use-service-account-credentials=true",
		"--leader-elect=false",
		"--controllers=" + strings.Join(controllers, ","),
		"--profiling=false",
	}
	spec := ProcessSpec{
		Name:    string(ControllerManager),
		Path:    bin,
		Args:    append(args, cp.opts.ControllerManagerFlags...),
		LogPath: cp.LogPath(ControllerManager),
	}
	if err := cp.startAndWait(ctx, ControllerManager, spec, ReadyCheck{URL: fmt.Sprintf("https://127.0.0.1:%d/healthz", port)}); err != nil {
		return err
	}
	// Healthy is not yet useful: pods are only admitted once the namespace has its
	// "default" ServiceAccount, which the controller-manager creates.
	waitCtx, cancel := context.WithTimeout(ctx, cp.opts.StartTimeout)
	defer cancel()
	if err := WaitForDefaultServiceAccount(waitCtx, cp.client, metav1.NamespaceDefault); err != nil {
		return fmt.Errorf("%w; last lines of %s:\n%s", err, cp.LogPath(ControllerManager), LogTail(cp.LogPath(ControllerManager), logTailLines))
	}
	return nil
}

func (cp *ControlPlane) startAndWait(ctx context.Context, c Component, spec ProcessSpec, check ReadyCheck) error {
	p, err := StartProcess(spec)
	if err != nil {
		return err
	}
	cp.mu.Lock()
	cp.procs[c], cp.specs[c], cp.ready[c] = p, spec, check
	cp.mu.Unlock()
	waitCtx, cancel := context.WithTimeout(ctx, cp.opts.StartTimeout)
	defer cancel()
	return WaitReady(waitCtx, p, check)
}

// writeKubeconfig writes a kubeconfig for the apiserver that authenticates with pair,
// certificates embedded so that the file stands alone.
func (cp *ControlPlane) writeKubeconfig(path, user string, pair KeyPair) error {
	const name = "isolator-e2e"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: cp.url, CertificateAuthorityData: cp.ca.CertPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: pair.CertPEM, ClientKeyData: pair.KeyPEM}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: user}
	cfg.CurrentContext = name
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("kubeconfig for %s: %w", user, err)
	}
	if err := writeFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("kubeconfig for %s: %w", user, err)
	}
	return nil
}

// Kubeconfig returns the path of the admin kubeconfig (user AdminUser, group
// system:masters).
func (cp *ControlPlane) Kubeconfig() string { return cp.kubeconfig }

// RESTConfig returns a copy of the admin client configuration.
func (cp *ControlPlane) RESTConfig() *rest.Config { return rest.CopyConfig(cp.restConfig) }

// Client returns the admin clientset.
func (cp *ControlPlane) Client() kubernetes.Interface { return cp.client }

// URL returns the apiserver's base URL, https://127.0.0.1:<port>.
func (cp *ControlPlane) URL() string { return cp.url }

// CA returns the CA that signed the apiserver's serving certificate and that the apiserver
// trusts for client certificates.
func (cp *ControlPlane) CA() *CA { return cp.ca }

// WorkDir returns the control plane's temporary directory (certificates, kubeconfigs and,
// unless Options.LogDir is set, logs). Stop removes it.
func (cp *ControlPlane) WorkDir() string { return cp.workDir }

// LogDir returns the directory holding the component logs. Tests may put the logs of
// their own processes here too, so that they are saved with the rest on failure.
func (cp *ControlPlane) LogDir() string { return cp.logDir }

// LogPath returns the log file of component c.
func (cp *ControlPlane) LogPath(c Component) string {
	return filepath.Join(cp.logDir, string(c)+".log")
}

// LogPaths returns the log files of the components that were started.
func (cp *ControlPlane) LogPaths() map[Component]string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	out := map[Component]string{}
	for c := range cp.procs {
		out[c] = cp.LogPath(c)
	}
	return out
}

// Process returns the running process of component c, or nil if it was not started.
func (cp *ControlPlane) Process(c Component) *Process {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.procs[c]
}

// UserConfig returns a client configuration that authenticates as user in groups with a
// client certificate from the control plane's CA: what a test uses to act as a
// non-admin user that RBAC then restricts.
func (cp *ControlPlane) UserConfig(user string, groups ...string) (*rest.Config, error) {
	pair, err := cp.ca.IssueClient(user, groups...)
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(cp.restConfig)
	cfg.CertData, cfg.KeyData = pair.CertPEM, pair.KeyPEM
	cfg.CertFile, cfg.KeyFile = "", ""
	return cfg, nil
}

// UserKubeconfig writes a kubeconfig for user in groups (see UserConfig) into the work
// directory and returns its path, for processes such as kubectl or isolator itself.
func (cp *ControlPlane) UserKubeconfig(user string, groups ...string) (string, error) {
	pair, err := cp.ca.IssueClient(user, groups...)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cp.workDir, "kubeconfigs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("kubeconfig for %s: %w", user, err)
	}
	path := filepath.Join(dir, sanitizeName(user)+".kubeconfig")
	return path, cp.writeKubeconfig(path, user, pair)
}

// RestartAPIServer stops the kube-apiserver gracefully and starts it again with the same
// flags, port, certificates and etcd, and waits until it is ready. The other components
// keep running, as they would through an apiserver upgrade or crash.
func (cp *ControlPlane) RestartAPIServer(ctx context.Context) error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.stopped {
		return errors.New("restart kube-apiserver: the control plane is stopped")
	}
	old, spec, check := cp.procs[APIServer], cp.specs[APIServer], cp.ready[APIServer]
	if old == nil {
		return errors.New("restart kube-apiserver: it was not started (Options.Components)")
	}
	if err := old.Stop(DefaultStopGrace); err != nil {
		return fmt.Errorf("restart kube-apiserver: %w", err)
	}
	p, err := StartProcess(spec)
	if err != nil {
		return fmt.Errorf("restart kube-apiserver: %w", err)
	}
	cp.procs[APIServer] = p
	waitCtx, cancel := context.WithTimeout(ctx, cp.opts.StartTimeout)
	defer cancel()
	if err := WaitReady(waitCtx, p, check); err != nil {
		return fmt.Errorf("restart kube-apiserver: %w", err)
	}
	return nil
}

// Stop stops every component (controller-manager, apiserver, etcd, in that order) and
// removes the work directory and etcd's data. It is safe to call more than once.
func (cp *ControlPlane) Stop() error {
	err := cp.stopProcesses()
	cp.removeWorkDir()
	return err
}

func (cp *ControlPlane) stopProcesses() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.stopped = true
	var errs []error
	for _, p := range cp.extra {
		errs = append(errs, p.Stop(DefaultStopGrace))
	}
	for _, c := range slices.Backward(AllComponents) {
		if p := cp.procs[c]; p != nil {
			errs = append(errs, p.Stop(DefaultStopGrace))
		}
	}
	return errors.Join(errs...)
}

func (cp *ControlPlane) removeWorkDir() {
	if cp.etcdDataDir != "" {
		_ = os.RemoveAll(cp.etcdDataDir)
	}
	_ = os.RemoveAll(cp.workDir)
}

// WaitForDefaultServiceAccount waits until namespace ns has its "default" ServiceAccount.
// Until then the ServiceAccount admission plugin rejects pods that don't name another one.
func WaitForDefaultServiceAccount(ctx context.Context, client kubernetes.Interface, ns string) error {
	lastErr := errors.New("not looked up yet")
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, lastErr = client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return lastErr == nil, nil
	})
	if err != nil {
		return fmt.Errorf("namespace %s has no default ServiceAccount (is kube-controller-manager running?): %w; last lookup: %w", ns, err, lastErr)
	}
	return nil
}

// CreateNamespace creates namespace name with labels and waits until pods can be created
// in it (its default ServiceAccount exists).
func (cp *ControlPlane) CreateNamespace(ctx context.Context, name string, labels map[string]string) (*corev1.Namespace, error) {
	ns, err := cp.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create namespace %s: %w", name, err)
	}
	if err != nil {
		if ns, err = cp.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{}); err != nil {
			return nil, fmt.Errorf("get namespace %s: %w", name, err)
		}
	}
	if slices.Contains(cp.opts.Components, ControllerManager) {
		if err := WaitForDefaultServiceAccount(ctx, cp.client, name); err != nil {
			return nil, err
		}
	}
	return ns, nil
}

// StartScheduler runs kube-scheduler (from ToolsBin) as system:kube-scheduler, as the
// bootstrap RBAC policy expects, and waits until it is healthy. Start does not run one,
// so that pods stay unscheduled unless a suite has a node; Stop stops it.
func (cp *ControlPlane) StartScheduler(ctx context.Context) (*Process, error) {
	bin, err := Tool("kube-scheduler")
	if err != nil {
		return nil, err
	}
	kc, err := cp.UserKubeconfig("system:kube-scheduler")
	if err != nil {
		return nil, err
	}
	ports, err := FreePorts(1)
	if err != nil {
		return nil, err
	}
	p, err := StartProcess(ProcessSpec{
		Name: "kube-scheduler", Path: bin,
		Args: []string{"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
			"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", ports[0]), "--leader-elect=false"},
		LogPath: filepath.Join(cp.logDir, "kube-scheduler.log"),
	})
	if err != nil {
		return nil, err
	}
	cp.mu.Lock()
	cp.extra = append(cp.extra, p)
	cp.mu.Unlock()
	waitCtx, cancel := context.WithTimeout(ctx, cp.opts.StartTimeout)
	defer cancel()
	if err := WaitReady(waitCtx, p, ReadyCheck{URL: fmt.Sprintf("https://127.0.0.1:%d/healthz", ports[0])}); err != nil {
		return nil, err
	}
	return p, nil
}
