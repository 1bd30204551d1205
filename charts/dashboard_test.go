package charts

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var metricName = regexp.MustCompile(`\bisolator_[a-z_]+`)

// TestDashboardShowsEveryMetric: the Grafana dashboard has a panel for every metric
// isolator documents (docs/metrics.md, docs/node.md, docs/certificates.md), and
// queries no isolator metric that is not documented.
func TestDashboardShowsEveryMetric(t *testing.T) {
	documented := map[string]bool{}
	for _, page := range []string{"metrics.md", "node.md", "certificates.md"} {
		data, err := os.ReadFile(filepath.Join("..", "docs", page))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if m := regexp.MustCompile("^\\| `(isolator_[a-z_]+)` \\|").FindStringSubmatch(line); m != nil {
				documented[m[1]] = true
			}
		}
	}
	if len(documented) < 15 {
		t.Fatalf("found only %d documented metrics: the docs' tables changed?", len(documented))
	}
	data, err := os.ReadFile(filepath.Join(Dir(), "files", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dashboard struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dashboard); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	shown := map[string]bool{}
	for _, p := range dashboard.Panels {
		for _, target := range p.Targets {
			for _, m := range metricName.FindAllString(target.Expr, -1) {
				m = strings.TrimSuffix(m, "_bucket")
				shown[m] = true
				if !documented[m] {
					t.Errorf("panel %q queries %s, which no page documents", p.Title, m)
				}
			}
		}
	}
	var missing []string
	for m := range documented {
		if !shown[m] {
			missing = append(missing, m)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("no dashboard panel shows %v", missing)
	}
}
