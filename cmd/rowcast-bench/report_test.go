package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
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
var committedRuns = []string{"results.json", "results-71294d5.json", "results-73b6069.json", "results-44ce640.json", "results-f70cbee.json", "results-f717ad0.json", "results-9990908.json", "results-b201c0a.json"}

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
	r := newEmptyResults(b)
	r.machine, r.texts, r.errs, r.elapsedS = f.Machine, f.Frames, f.Errors, f.ScenarioSeconds
	r.total = time.Duration(f.TotalSeconds * float64(time.Second))
	for _, p := range f.Points {
		for _, run := range p.Runs {
			var err error
			switch {
			case p.Scenario == "capture" && p.Key == sustainedKey:
				err = addRun(&r.sustained, p.Key, p.Labels, run)
			case p.Scenario == "capture":
				err = addRun(&r.capture, p.Key, p.Labels, run)
			case p.Scenario == "latency":
				err = addRun(&r.latency, p.Key, p.Labels, run)
			case p.Scenario == "fanout":
				err = addRun(&r.fanout, p.Key, p.Labels, run)
			case p.Scenario == "fanout_steps":
				err = addRun(&r.fanoutSteps, p.Key, p.Labels, run)
			case p.Scenario == "memory":
				err = addRun(&r.memory, p.Key, p.Labels, run)
			case p.Scenario == "writers":
				err = addRun(&r.writers, p.Key, p.Labels, run)
			case p.Scenario == "wire":
				err = addRun(&r.wire, p.Key, p.Labels, run)
			case p.Scenario == "cluster":
				err = addRun(&r.cluster, p.Key, p.Labels, run)
			default:
				err = fmt.Errorf("unknown scenario")
			}
			if err != nil {
				t.Fatalf("%s: %s %s: %v", path, p.Scenario, p.Key, err)
			}
		}
	}
	return r
}

// addRun adds a run read from a results file: every metric of T must be
// there and nothing else (null is NaN).
func addRun[T any](s *series[T], key string, labels map[string]string, run map[string]*float64) error {
	var v T
	rv := reflect.ValueOf(&v).Elem()
	seen := 0
	for i := range rv.NumField() {
		name := jsonName(rv.Type().Field(i))
		x, ok := run[name]
		if !ok && (strings.HasPrefix(name, "sio_") || strings.HasSuffix(rv.Type().Field(i).Tag.Get("json"), ",omitempty")) {
			// Runs from before the Socket.IO fan-out measurement, or
			// before a metric marked omitempty was added.
			rv.Field(i).SetFloat(math.NaN())
			continue
		}
		if !ok {
			return fmt.Errorf("no %s in the run", name)
		}
		seen++
		if x == nil {
			rv.Field(i).SetFloat(math.NaN())
		} else {
			rv.Field(i).SetFloat(*x)
		}
	}
	if seen != len(run) {
		return fmt.Errorf("the run has %d metrics, %T has %d", len(run), v, seen)
	}
	s.add(key, labels, v)
	return nil
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
			dropUnmeasuredSIO(got)
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

// dropUnmeasuredSIO removes the Socket.IO fan-out figures that runs from
// before that measurement do not have (null once written back).
func dropUnmeasuredSIO(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if x == nil && strings.HasPrefix(k, "sio_") {
				delete(v, k)
				continue
			}
			dropUnmeasuredSIO(x)
		}
	case []any:
		for _, x := range v {
			dropUnmeasuredSIO(x)
		}
	}
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
