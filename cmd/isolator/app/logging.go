package app

import (
	"io"
	"log/slog"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
)

// logOptions are the logging flags shared by the long-running commands.
type logOptions struct {
	format string
	level  int
}

func (o *logOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.format, "log-format", "text", "log format: text or json")
	fs.IntVarP(&o.level, "v", "v", 0, "log verbosity: 0 logs every change and refusal (webhook: pods denied or replaced, policy changes; node: each install step), 1 and higher add detail")
}

// setup installs a structured logger for isolator, controller-runtime and client-go.
func (o *logOptions) setup(w io.Writer) (logr.Logger, error) {
	opts := &slog.HandlerOptions{Level: slog.Level(-o.level)}
	var h slog.Handler
	switch o.format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return logr.Discard(), usageError("--log-format must be text or json, not %q", o.format)
	}
	log := logr.FromSlogHandler(h)
	ctrl.SetLogger(log)
	klog.SetLogger(log)
	return log, nil
}
