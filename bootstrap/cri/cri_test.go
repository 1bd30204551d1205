package cri

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestParseStatus(t *testing.T) {
	ready := &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: true},
		{Type: runtimeapi.NetworkReady, Status: false},
	}}
	cases := []struct {
		name    string
		resp    *runtimeapi.StatusResponse
		want    *Status
		wantErr bool
	}{
		{
			name: "containerd 2.x runtimeHandlers",
			resp: &runtimeapi.StatusResponse{Status: ready, RuntimeHandlers: []*runtimeapi.RuntimeHandler{{Name: "kata"}, {Name: "runc"}, {Name: ""}}},
			want: &Status{RuntimeReady: true, Handlers: map[string]bool{"kata": true, "runc": true, "": true}},
		},
		{
			name: "containerd 1.6 verbose config",
			resp: &runtimeapi.StatusResponse{Status: ready, Info: map[string]string{"config": `{"containerd":{"runtimes":{"kata":{"runtimeType":"io.containerd.kata.v2"},"runc":{}}}}`}},
			want: &Status{RuntimeReady: true, Handlers: map[string]bool{"kata": true, "runc": true}, Config: `{"containerd":{"runtimes":{"kata":{"runtimeType":"io.containerd.kata.v2"},"runc":{}}}}`},
		},
		{
			name: "not ready",
			resp: &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{{Type: runtimeapi.RuntimeReady, Status: false}}}},
			want: &Status{RuntimeReady: false, Handlers: map[string]bool{}},
		},
		{
			name:    "bad info",
			resp:    &runtimeapi.StatusResponse{Status: ready, Info: map[string]string{"config": `{`}},
			wantErr: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseStatus(c.resp)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, c.wantErr)
			}
			if !c.wantErr && !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestWaitTimesOut: with nothing serving the endpoint, both waits give up after their
// timeout with ErrTimeout, saying what they waited for and the last error seen.
func TestWaitTimesOut(t *testing.T) {
	endpoint := "unix://" + filepath.Join(t.TempDir(), "containerd.sock")
	start := time.Now()
	_, err := WaitReady(context.Background(), endpoint, 300*time.Millisecond)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "to be ready") || !strings.Contains(err.Error(), "containerd.sock") {
		t.Errorf("WaitReady: %v", err)
	}
	_, err = WaitFor(context.Background(), endpoint, "kata", true, 300*time.Millisecond)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), `serve handler "kata"=true`) || !strings.Contains(err.Error(), "last:") {
		t.Errorf("WaitFor: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("two waits of 300 ms took %v", d)
	}
}
