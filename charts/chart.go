// Package charts holds isolator's Helm chart (charts/isolator) and Render, which
// renders it with the Helm SDK as `helm template` does. Its tests lint the chart and
// prove that it installs the same objects as the kustomize tree in manifests/ for the
// same settings.
package charts

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// ReleaseName is the release name the tests and the docs use.
const ReleaseName = "isolator"

// Dir is the chart's directory, found from this source file.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "isolator")
}

// Render renders the chart into namespace with values (merged over values.yaml), as
// `helm template` does, for the Kubernetes version kubeVersion (e.g. "v1.37.2").
func Render(namespace, kubeVersion string, values map[string]any) ([]*unstructured.Unstructured, error) {
	ch, err := loader.Load(Dir())
	if err != nil {
		return nil, fmt.Errorf("loading the chart: %w", err)
	}
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, err
	}
	install := action.NewInstall(action.NewConfiguration())
	install.DryRunStrategy = action.DryRunClient
	install.Replace = true
	install.ReleaseName = ReleaseName
	install.Namespace = namespace
	install.KubeVersion = kv
	rel, err := install.Run(ch, values)
	if err != nil {
		return nil, fmt.Errorf("rendering the chart: %w", err)
	}
	r, ok := rel.(*releasev1.Release)
	if !ok {
		return nil, fmt.Errorf("rendering the chart: unexpected release type %T", rel)
	}
	return Decode([]byte(r.Manifest))
}

// Decode splits a multi-document YAML stream into objects, skipping empty documents.
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}
