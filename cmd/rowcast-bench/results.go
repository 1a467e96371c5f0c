package main

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
)

// Every scenario records its measurements as a struct of float64 fields
// (captureBacklog, latencyResult, ...), declared beside the scenario with
// each field's unit; the json tag is the metric's name in the results
// file. The report reads the fields, so a misspelt metric does not compile
// instead of showing up as "not measured". Targets are declared as bounds
// beside the metrics they judge (see bound).

// point is one measured point of a scenario: every run and their median.
type point[T any] struct {
	scenario string
	Key      string
	Labels   map[string]string
	Runs     []T
	// Median holds, field by field, the median of the runs that measured
	// the field (not NaN); NaN when none did.
	Median T
}

// recorded is a point of any scenario, as written to the results file.
type recorded interface{ jsonPoint() jsonPoint }

// series is the points of one kind of result, in the order first measured.
type series[T any] struct {
	scenario string
	// all is the results' list of every point of every series in the
	// order first measured: the order of the results file.
	all    *[]recorded
	points []*point[T]
}

func newSeries[T any](r *results, scenario string) series[T] {
	checkResultType(reflect.TypeFor[T]())
	return series[T]{scenario: scenario, all: &r.order}
}

// add records one run of the point key.
func (s *series[T]) add(key string, labels map[string]string, v T) {
	p := s.point(key)
	if p == nil {
		p = &point[T]{scenario: s.scenario, Key: key, Labels: labels}
		s.points = append(s.points, p)
		*s.all = append(*s.all, p)
	}
	p.Runs = append(p.Runs, v)
	p.Median = medianOf(p.Runs)
}

// point returns the point key, nil when it was not measured.
func (s *series[T]) point(key string) *point[T] {
	for _, p := range s.points {
		if p.Key == key {
			return p
		}
	}
	return nil
}

// median returns the median of the point key, every field NaN (shown as
// "–", judged "not measured") when it was not measured.
func (s *series[T]) median(key string) T {
	if p := s.point(key); p != nil {
		return p.Median
	}
	return nanOf[T]()
}

func (s *series[T]) measured() bool { return len(s.points) > 0 }

// checkResultType panics unless every field of t is a float64 with a json
// name: medians and the results file handle nothing else.
func checkResultType(t reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() != reflect.Float64 || jsonName(f) == "" {
			panic(fmt.Sprintf("rowcast-bench: result field %s.%s must be a float64 with a json tag", t.Name(), f.Name))
		}
	}
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// medianOf returns the field-by-field median of runs.
func medianOf[T any](runs []T) T {
	var out T
	ov := reflect.ValueOf(&out).Elem()
	for i := range ov.NumField() {
		var v []float64
		for _, r := range runs {
			if x := reflect.ValueOf(r).Field(i).Float(); !math.IsNaN(x) {
				v = append(v, x)
			}
		}
		if len(v) == 0 {
			ov.Field(i).SetFloat(math.NaN())
		} else {
			ov.Field(i).SetFloat(median(v))
		}
	}
	return out
}

// nanOf returns a T with every field NaN.
func nanOf[T any]() T {
	var out T
	ov := reflect.ValueOf(&out).Elem()
	for i := range ov.NumField() {
		ov.Field(i).SetFloat(math.NaN())
	}
	return out
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// fields returns v's metrics by json name, NaN and ±Inf as nil (JSON has
// no such numbers).
func fields(v any) map[string]any {
	rv := reflect.ValueOf(v)
	out := map[string]any{}
	for i := range rv.NumField() {
		x := rv.Field(i).Float()
		if math.IsNaN(x) && strings.HasSuffix(rv.Type().Field(i).Tag.Get("json"), ",omitempty") {
			continue // not measured in this run (older runs)
		}
		if math.IsNaN(x) || math.IsInf(x, 0) {
			out[jsonName(rv.Type().Field(i))] = nil
		} else {
			out[jsonName(rv.Type().Field(i))] = x
		}
	}
	return out
}

// jsonPoint is a point in the results file.
type jsonPoint struct {
	Scenario string            `json:"scenario"`
	Key      string            `json:"key"`
	Labels   map[string]string `json:"labels,omitempty"`
	Median   map[string]any    `json:"median"`
	Runs     []map[string]any  `json:"runs"`
}

func (p *point[T]) jsonPoint() jsonPoint {
	jp := jsonPoint{Scenario: p.scenario, Key: p.Key, Labels: p.Labels, Median: fields(p.Median)}
	for _, run := range p.Runs {
		jp.Runs = append(jp.Runs, fields(run))
	}
	return jp
}

// bound is a target's threshold: the measured value must be at least (or
// at most) limit, or limit times a reference measured in the same run.
type bound struct {
	atLeast bool
	limit   float64
}

func atLeast(limit float64) bound { return bound{atLeast: true, limit: limit} }
func atMost(limit float64) bound  { return bound{limit: limit} }

// met reports whether v is within the bound.
func (b bound) met(v float64) bool { return b.metBy(v, 1) }

// metBy reports whether v is within the bound times ref.
func (b bound) metBy(v, ref float64) bool {
	if b.atLeast {
		return v >= b.limit*ref
	}
	return v <= b.limit*ref
}

// String is the bound as the targets table shows it: "≥ 0.9", "≤ 10".
func (b bound) String() string {
	if b.atLeast {
		return fmt.Sprintf("≥ %g", b.limit)
	}
	return fmt.Sprintf("≤ %g", b.limit)
}

func boolf(v bool) float64 {
	if v {
		return 1
	}
	return 0
}
