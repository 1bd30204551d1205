// Package harness runs a real Kubernetes control plane for isolator's e2e tests and
// demos: Debian's etcd, and kube-apiserver and kube-controller-manager v1.37.2 built by
// `make tools`, on free loopback ports with their own CA, certificates and temporary
// directories. The apiserver authorizes with Node,RBAC and runs the default admission
// plugins (RuntimeClass among them); the controller-manager runs the workload controllers,
// so Deployments, ReplicaSets, Jobs and CronJobs really create pods, and new namespaces get
// their default ServiceAccount. By default there is no scheduler and no kubelet: pods are
// admitted and stored, never run. (A CronJob's pods appear at its next scheduled minute, as
// in a cluster: a test that needs them quickly creates a Job from the CronJob's template.)
//
// # Nodes
//
// Where pods must run, StartScheduler adds kube-scheduler, and StartNode (as root) a node:
// containerd 2.x with Debian's runc and CNI plugins, in a mount namespace where directories
// of its own stand for /etc/containerd, /opt, /run, /var/lib and /var/log, and a network
// namespace whose only addresses are its loopback and the pods' bridge (no route leaves the
// machine). Node.StartKubelet registers it with a real kubelet, configured with
// failCgroupV1: false and cgroupsPerQOS: false because the machines this runs on use
// cgroup v1: settings for this test environment, not advice for clusters. Images are
// imported, never pulled: GoImage builds one from a Go package, Node.ImportImage and
// TagImage load and name it. The Kata VM cannot start on these machines; the e2e suites and the demo install a
// Kata release whose shim is a stand-in (e2e/tools/containerd/kata-standin).
//
// The core API needs no *testing.T, so a demo program can use it too:
//
//	cp, err := harness.Start(ctx, harness.Options{})
//	if err != nil { ... }
//	defer cp.Stop()
//	client := cp.Client()          // admin clientset; cp.Kubeconfig() for kubectl
//
// # Sharing one control plane per package
//
// Starting takes several seconds, so a test package starts one control plane in TestMain
// and its tests share it, each in its own namespace:
//
//	var cp *harness.ControlPlane
//
//	func TestMain(m *testing.M) {
//		os.Exit(harness.RunTests(m, harness.Options{}, &cp))
//	}
//
//	func TestSomething(t *testing.T) {
//		cp.SaveLogsOnFailure(t)
//		ns, err := cp.CreateNamespace(ctx, "something", nil)
//		...
//	}
//
// A test that needs a control plane of its own (other apiserver flags, or one it breaks on
// purpose) calls StartForTest. Either way, a failed test leaves the component logs in
// e2e/_artifacts/<TestName>/ (or <package directory>/ for RunTests) and says so.
//
// # Processes
//
// StartProcess runs any server binary (the isolator webhook under test, for one) with
// its output in a log file, Stop ends it with SIGTERM and then SIGKILL, and WaitReady polls
// an HTTP(S) readiness URL, failing early with the log tail if the process exits. On Linux
// every process started here is killed by the kernel when the test binary dies, so none
// outlives a crashed or timed-out test. WriteServingCerts makes the CA and serving
// certificate a webhook under test serves with.
package harness
