package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.md from the committed results")

// committedRuns are results files from earlier full runs (-runs 3 -out).
var committedRuns = []string{"results.json", "results-b201c0a.json"}

// resultsFile is what writeJSON writes, as read back.
type resultsFile struct {
	Machine machineInfo `json:"machine"`
	Options struct {
		Quick     bool     `json:"quick"`
		Runs      int      `json:"runs"`
		Scenarios []string `json:"scenarios"`
		Pinned    bool     `json:"pinned"`
	} `json:"options"`
	TotalSeconds    float64              `json:"total_seconds"`
	ScenarioSeconds map[string][]float64 `json:"scenario_seconds"`
	Points          []struct {
		Scenario string                `json:"scenario"`
		Key      string                `json:"key"`
		Labels   map[string]string     `json:"labels"`
		Median   map[string]*float64   `json:"median"`
		Runs     []map[string]*float64 `json:"runs"`
	} `json:"points"`
	Frames map[string]string `json:"frames"`
	Errors map[string]string `json:"errors"`
}

// nan turns writeJSON's nulls back into NaN.
func nan(m map[string]*float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if v == nil {
			out[k] = math.NaN()
		} else {
			out[k] = *v
		}
	}
	return out
}

// loadResults reads a results file back, each run as it was measured.
func loadResults(t *testing.T, path string) *results {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f resultsFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b := &bench{opts: options{quick: f.Options.Quick, runs: f.Options.Runs, scenarios: f.Options.Scenarios, pin: f.Options.Pinned}}
	r := &results{b: b, machine: f.Machine, points: map[string]*point{}, texts: f.Frames, errs: f.Errors,
		elapsedS: f.ScenarioSeconds, total: time.Duration(f.TotalSeconds * float64(time.Second))}
	for _, p := range f.Points {
		for _, run := range p.Runs {
			r.add(p.Scenario, p.Key, p.Labels, nan(run))
		}
	}
	return r
}

// TestReportFromCommittedRuns renders the report of each committed run and
// compares it with testdata, and checks that writing the results again
// gives the committed file's measurements back.
func TestReportFromCommittedRuns(t *testing.T) {
	for _, name := range committedRuns {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("..", "..", "bench", name)
			r := loadResults(t, path)

			var md bytes.Buffer
			r.render(&md)
			golden := filepath.Join("testdata", strings.TrimSuffix(name, ".json")+".md")
			if *update {
				if err := os.WriteFile(golden, md.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			wantMD, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run the test with -update to write it)", err)
			}
			if !bytes.Equal(md.Bytes(), wantMD) {
				t.Errorf("report differs from %s:\n%s", golden, md.String())
			}

			out := filepath.Join(t.TempDir(), name)
			if err := r.writeJSON(out); err != nil {
				t.Fatal(err)
			}
			got, want := readDoc(t, out), readDoc(t, path)
			if !reflect.DeepEqual(got, want) {
				for k := range want {
					if !reflect.DeepEqual(got[k], want[k]) {
						g, _ := json.MarshalIndent(got[k], "", "  ")
						w, _ := json.MarshalIndent(want[k], "", "  ")
						t.Errorf("writeJSON does not give %q of %s back:\n%s", k, path, firstDiff(g, w))
					}
				}
			}
		})
	}
}

// readDoc reads a results file as JSON values, without the time it was
// generated and without the targets, which an older bench judged with
// other rules (the targets are in the rendered report).
func readDoc(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	delete(doc, "generated")
	delete(doc, "targets")
	return doc
}

// firstDiff shows the lines around the first difference.
func firstDiff(a, b []byte) string {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := 0; i < min(len(al), len(bl)); i++ {
		if al[i] != bl[i] {
			return "line " + itoa(i+1) + ":\n  got:  " + al[i] + "\n  want: " + bl[i]
		}
	}
	return "lengths differ: " + itoa(len(al)) + " and " + itoa(len(bl)) + " lines"
}
