package bootstrap

import "errors"

// The errors callers tell apart.
var (
	// ErrHostUnsupported means the node cannot run Kata (no KVM, or kata-runtime check
	// failed); it is reported and never labelled ready.
	ErrHostUnsupported = errors.New("this node cannot run Kata Containers")

	// ErrSandboxFailed means containerd serves the kata handler but a pod sandbox with
	// it does not start; the node is not labelled ready.
	ErrSandboxFailed = errors.New("a Kata pod sandbox does not start on this node")

	// ErrRestartDeferred means a repair needs a containerd restart that the rate limit does
	// not allow yet; nothing was changed.
	ErrRestartDeferred = errors.New("containerd restart deferred by the rate limit")
)
