//go:build e2e

package bypass

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// imageUpdate is one way to change a running pod's image: kubectl set image, or a
// JSON patch.
type imageUpdate struct {
	what  string
	apply func(ctx context.Context, ns, name, container, image string) error
}

func imageUpdates(t *testing.T) []imageUpdate {
	kubeconfig, err := cp.UserKubeconfig("tenant@example.com", "tenants")
	if err != nil {
		t.Fatal(err)
	}
	return []imageUpdate{
		{"kubectl set image", func(ctx context.Context, ns, name, container, image string) error {
			// -v=6 logs each request with its HTTP status: kubectl set image prints only
			// the refusal's message.
			_, err := cp.Kubectl(ctx, nil, "--kubeconfig", kubeconfig, "-v=6", "-n", ns, "set", "image", "pod/"+name, container+"="+image)
			return statusOf(err)
		}},
		{"a JSON patch", func(ctx context.Context, ns, name, container, image string) error {
			p, err := tenant.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			path := ""
			for i, c := range p.Spec.Containers {
				if c.Name == container {
					path = fmt.Sprintf("/spec/containers/%d/image", i)
				}
			}
			for i, c := range p.Spec.InitContainers {
				if c.Name == container {
					path = fmt.Sprintf("/spec/initContainers/%d/image", i)
				}
			}
			body := fmt.Sprintf(`[{"op":"replace","path":%q,"value":%q}]`, path, image)
			_, err = tenant.CoreV1().Pods(ns).Patch(ctx, name, types.JSONPatchType, []byte(body), metav1.PatchOptions{})
			return err
		}},
	}
}

// runningPods creates, as the tenant, a runc-rc platform pod in a trusted namespace with
// an init container and a native sidecar (an init container that keeps running), and a
// kata-rc pod in a sandboxed namespace. Their images may change; their classes can't.
func runningPods(t *testing.T, ctx context.Context, suffix string) (runc, kata string) {
	t.Helper()
	p := pod("payments", "ledger-"+suffix, "registry.example.com/platform/ledger:2")
	always := corev1.ContainerRestartPolicyAlways
	p.Spec.InitContainers = []corev1.Container{
		{Name: "migrate", Image: "registry.example.com/platform/migrate:2"},
		{Name: "proxy", Image: "registry.example.com/platform/proxy:2", RestartPolicy: &always},
	}
	got, err := attempt(t, ctx, p)
	admittedWith(t, "setup: a platform pod in a trusted namespace", got, err, "runc-rc")
	q := pod("shop", "web-"+suffix, "registry.example.com/shop/web:1")
	got, err = attempt(t, ctx, q)
	admittedWith(t, "setup: a pod in a sandboxed namespace", got, err, "kata-rc")
	if t.Failed() {
		t.FailNow()
	}
	return p.Name, q.Name
}

// 9 (found by an outside red team). A running pod's images can change: kubectl set
// image, or a patch, on a container, an init container or a sidecar. isolator decides
// such an update as it decides a creation: an image that needs kata-rc can't join a pod
// running runc-rc. Updates that keep the pod compliant go through.
func TestImageUpdates(t *testing.T) {
	ctx := testContext(t)
	for i, u := range imageUpdates(t) {
		runc, kata := runningPods(t, ctx, fmt.Sprint(i))
		for _, c := range []string{"app", "migrate", "proxy"} {
			what := fmt.Sprintf("%s: Docker Hub image into the runc-rc pod's %s", u.what, c)
			refusedBy(t, what, u.apply(ctx, "payments", runc, c, "docker.io/evil/x:1"), byWebhook,
				"rule platform/docker-hub-images refuses this update", "need runtime class kata-rc", "runs in runtime class runc-rc")
		}
		refusedBy(t, u.what+": another spelling of Docker Hub", u.apply(ctx, "payments", runc, "app", "docker.io:0443/evil/x:1"), byWebhook,
			"rule platform/docker-hub-images refuses this update")
		if err := u.apply(ctx, "payments", runc, "app", "registry.example.com/platform/ledger:3"); err != nil {
			t.Errorf("%s: a platform image update of a runc-rc pod was refused: %v", u.what, err)
		}
		if err := u.apply(ctx, "shop", kata, "app", "docker.io/evil/x:1"); err != nil {
			t.Errorf("%s: an image update of a kata-rc pod was refused: %v", u.what, err)
		}
	}
	got, err := cp.Client().CoreV1().Pods("payments").Get(ctx, "ledger-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range append(got.Spec.InitContainers, got.Spec.Containers...) {
		if c.Image == "docker.io/evil/x:1" {
			t.Errorf("container %s of the runc-rc pod runs %s", c.Name, c.Image)
		}
	}
}

// kubectlStatus finds the HTTP status of the PATCH that kubectl -v=6 logs, and
// kubectlMessage the refusal kubectl set image prints.
var (
	kubectlStatus  = regexp.MustCompile(`"Response" verb="PATCH" url="[^"]*" status="(\d{3}) [A-Za-z ]+"`)
	kubectlMessage = regexp.MustCompile(`error: failed to patch image update to pod template: (.*)`)
)

// statusOf turns kubectl's refusal back into the apiserver's status (the code it logged
// and the message it printed), so that defenceOf reads it as it reads a client-go
// error. Any other failure stays as it is.
func statusOf(err error) error {
	if err == nil {
		return nil
	}
	code, msg := kubectlStatus.FindStringSubmatch(err.Error()), kubectlMessage.FindStringSubmatch(err.Error())
	if code == nil || msg == nil {
		return err
	}
	n, _ := strconv.Atoi(code[1])
	var reason metav1.StatusReason
	switch n {
	case http.StatusForbidden:
		reason = metav1.StatusReasonForbidden
	case http.StatusUnprocessableEntity:
		reason = metav1.StatusReasonInvalid
	default:
		return err
	}
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: int32(n), Reason: reason, Message: msg[1]}}
}
