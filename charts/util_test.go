package charts

import (
	"os"

	"sigs.k8s.io/yaml"
)

func readYAML(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(data, v)
}
