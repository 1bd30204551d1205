package ociimage

// The contract of isolator's two images, which the Dockerfile and Webhook/Node below
// both build (TestDockerfileContract parses the Dockerfile and holds it to these):
// where the binary and the Kata release are, the user, entrypoint and command.
const (
	// BinaryPath is the isolator binary in both images.
	BinaryPath = "/isolator"
	// KataPath holds the Kata static release in the node image, in the release's own
	// layout (KataPath/opt/kata/{bin,libexec,share}); `node run --artifacts` reads it.
	KataPath = "/opt/isolator/kata"
	// WebhookUser is distroless's nonroot user; the node image runs as root, because
	// it writes containerd's configuration and the Kata files on the host.
	WebhookUser = "65532:65532"
)

var (
	// Entrypoint is both images' entrypoint.
	Entrypoint = []string{BinaryPath}
	// WebhookCmd and NodeCmd are the images' default arguments.
	WebhookCmd = []string{"webhook"}
	NodeCmd    = []string{"node", "run", "--host-root=/host", "--artifacts=" + KataPath}
)

// Webhook is the webhook image: the isolator binary built with -tags webhookonly, as
// a non-root user.
func Webhook(ref, binary, arch string) Spec {
	return Spec{
		Ref: ref, Arch: arch,
		Files:      []File{{Path: BinaryPath, Source: binary}, {Path: "/tmp", Dir: true, Mode: 0o1777}},
		User:       WebhookUser,
		Entrypoint: Entrypoint, Cmd: WebhookCmd,
	}
}

// Node is the node image: the full isolator binary and a Kata release unpacked into
// kataDir (which holds opt/kata), as root.
func Node(ref, binary, kataDir, arch string) Spec {
	return Spec{
		Ref: ref, Arch: arch,
		Files:      []File{{Path: BinaryPath, Source: binary}, {Path: KataPath, Source: kataDir}, {Path: "/tmp", Dir: true, Mode: 0o1777}},
		Entrypoint: Entrypoint, Cmd: NodeCmd,
	}
}
