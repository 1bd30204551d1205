package cri

import (
	"reflect"
	"testing"

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
