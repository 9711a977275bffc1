package kubernetes

// The metric names and PromQL the manifests and the Grafana dashboard
// use: queries parse, the Prometheus adapter's rules serve the HPA's
// metric, and every llmux metric named is one llmux exports.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const (
	dashboardFile = "grafana/llmux.json"
	// The Prometheus adapter's rules: Helm values, and a ConfigMap for an
	// adapter installed from manifests (outside manifestDir: it lives in
	// the adapter's namespace and would clash with the chart's).
	adapterValuesFile    = "prometheus-adapter/values.yaml"
	adapterConfigMapFile = "prometheus-adapter/configmap.yaml"
)

// adapterRule is one rule of the Prometheus adapter's configuration
// (prometheus-adapter's docs/config.md): every field it documents, so that
// strict decoding catches a misspelt one.
type adapterRule struct {
	SeriesQuery   string `json:"seriesQuery"`
	SeriesFilters []struct {
		Is    string `json:"is,omitempty"`
		IsNot string `json:"isNot,omitempty"`
	} `json:"seriesFilters,omitempty"`
	Resources struct {
		Overrides map[string]struct {
			Group    string `json:"group,omitempty"`
			Resource string `json:"resource"`
		} `json:"overrides,omitempty"`
		Template string `json:"template,omitempty"`
	} `json:"resources"`
	Name struct {
		Matches string `json:"matches"`
		As      string `json:"as,omitempty"`
	} `json:"name"`
	MetricsQuery string `json:"metricsQuery"`
}

type adapterConfig struct {
	Rules         []adapterRule `json:"rules"`
	ExternalRules []adapterRule `json:"externalRules,omitempty"`
}

// adapterValues is the part of the Helm chart's values this repository
// sets.
type adapterValues struct {
	Prometheus struct {
		URL  string `json:"url"`
		Port int    `json:"port"`
		Path string `json:"path,omitempty"`
	} `json:"prometheus"`
	Rules struct {
		Default bool          `json:"default"`
		Custom  []adapterRule `json:"custom"`
	} `json:"rules"`
}

// decodeYAMLStrict decodes YAML into v, refusing unknown, duplicate and
// wrongly cased fields.
func decodeYAMLStrict(data []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, v)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return fmt.Errorf("%v", strict)
	}
	return nil
}

func loadAdapterRules(t *testing.T, objs []object) []adapterRule {
	t.Helper()
	more, err := decodeFile(adapterConfigMapFile)
	if err != nil {
		t.Fatal(err)
	}
	cms := all[*corev1.ConfigMap](more)
	if len(cms) != 1 {
		t.Fatalf("%s: want one ConfigMap, got %d", adapterConfigMapFile, len(cms))
	}
	cm := cms[0]
	var cfg adapterConfig
	if err := decodeYAMLStrict([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("ConfigMap %s config.yaml: %v", cm.Name, err)
	}
	return cfg.Rules
}

// renderMetricsQuery fills a rule's metricsQuery as the adapter does (Go
// templates with << >> delimiters) for one pod.
func renderMetricsQuery(r adapterRule, series string) (string, error) {
	tmpl, err := template.New("q").Delims("<<", ">>").Parse(r.MetricsQuery)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, map[string]any{
		"Series":        series,
		"LabelMatchers": `namespace="llmux",pod=~"llmux-.*"`,
		"GroupBy":       "pod",
		"LabelValuesByName": map[string][]string{
			"namespace": {"llmux"}, "pod": {"llmux-0"},
		},
		"GroupBySlice": []string{"pod"},
	})
	return b.String(), err
}

// exposedName is the metric name a rule serves under, from its name.matches
// and name.as (the adapter's default `as` is "$1" with a group, else the
// whole name).
func exposedName(r adapterRule, series string) (string, error) {
	re, err := regexp.Compile(r.Name.Matches)
	if err != nil {
		return "", err
	}
	m := re.FindStringSubmatchIndex(series)
	if m == nil {
		return "", fmt.Errorf("name.matches %q does not match %s", r.Name.Matches, series)
	}
	as := r.Name.As
	if as == "" {
		if re.NumSubexp() > 0 {
			as = "$1"
		} else {
			as = "$0"
		}
	}
	return string(re.ExpandString(nil, as, series, m)), nil
}

func TestAdapterRulesParseAndServeTheHPAMetricPerPod(t *testing.T) {
	objs := loadManifests(t)
	rules := loadAdapterRules(t, objs)
	exposed := map[string]adapterRule{}
	for _, r := range rules {
		sel, err := parser.ParseMetricSelector(r.SeriesQuery)
		if err != nil {
			t.Errorf("seriesQuery %q: %v", r.SeriesQuery, err)
			continue
		}
		series := ""
		for _, m := range sel {
			if m.Name == "__name__" {
				series = m.Value
			}
		}
		name, err := exposedName(r, series)
		if err != nil {
			t.Error(err)
			continue
		}
		q, err := renderMetricsQuery(r, series)
		if err != nil {
			t.Errorf("metricsQuery %q: %v", r.MetricsQuery, err)
			continue
		}
		if _, err := parser.ParseExpr(q); err != nil {
			t.Errorf("metricsQuery for %s renders to %q, which is not PromQL: %v", series, q, err)
		}
		for _, label := range []string{"namespace", "pod"} {
			if o, ok := r.Resources.Overrides[label]; !ok || o.Resource != label {
				t.Errorf("rule for %s: label %s is not mapped to resource %s (overrides %v)", series, label, label, r.Resources.Overrides)
			}
		}
		exposed[name] = r
	}
	hpa := find[*autoscalingv2.HorizontalPodAutoscaler](t, objs, "llmux")
	for _, m := range hpa.Spec.Metrics {
		if m.Type != autoscalingv2.PodsMetricSourceType || m.Pods == nil {
			t.Errorf("HPA metric of type %s: this setup serves Pods metrics", m.Type)
			continue
		}
		if _, ok := exposed[m.Pods.Metric.Name]; !ok {
			t.Errorf("HPA metric %q is served by no adapter rule (rules serve %v)", m.Pods.Metric.Name, keys(exposed))
		}
		if m.Pods.Target.Type != autoscalingv2.AverageValueMetricType || m.Pods.Target.AverageValue == nil || m.Pods.Target.AverageValue.Sign() <= 0 {
			t.Errorf("HPA target %+v: want a positive AverageValue", m.Pods.Target)
		}
	}
	if len(hpa.Spec.Metrics) == 0 {
		t.Error("the HPA has no metric")
	}
}

func TestAdapterHelmValuesCarryTheSameRulesAsTheConfigMap(t *testing.T) {
	rules := loadAdapterRules(t, loadManifests(t))
	data, err := os.ReadFile(adapterValuesFile)
	if err != nil {
		t.Fatal(err)
	}
	var v adapterValues
	if err := decodeYAMLStrict(data, &v); err != nil {
		t.Fatalf("%s: %v", adapterValuesFile, err)
	}
	if !reflect.DeepEqual(v.Rules.Custom, rules) {
		t.Errorf("%s rules.custom differ from the ConfigMap's rules:\n%+v\n%+v", adapterValuesFile, v.Rules.Custom, rules)
	}
	if v.Rules.Default {
		t.Errorf("%s: rules.default on: the chart's default rules would serve every series too", adapterValuesFile)
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboardPanel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// grafanaVars replaces Grafana's interval variables, which stand where
// PromQL wants a duration; other variables sit inside label values.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "${__rate_interval}", "5m", "$__interval", "1m", "$__range", "1h")

// dashboardExprs returns every query of the dashboard (panel targets and
// variable queries) as PromQL, by panel title.
func dashboardExprs(t *testing.T, d dashboard) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out[p.Title] = append(out[p.Title], grafanaVars.Replace(tg.Expr))
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*\w+\)$`)
	for _, v := range d.Templating.List {
		q, ok := v.Query.(map[string]any)
		if !ok || v.Type != "query" {
			continue
		}
		s, _ := q["query"].(string)
		m := labelValues.FindStringSubmatch(s)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(SELECTOR, LABEL)", v.Name, s)
			continue
		}
		out["variable "+v.Name] = append(out["variable "+v.Name], m[1])
	}
	return out
}

// metricNames returns the metric names a PromQL expression selects, with
// histogram suffixes removed (a histogram's family is named without them).
func metricNames(expr string) ([]string, error) {
	e, err := parser.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				name = strings.TrimSuffix(name, suffix)
			}
			names = append(names, name)
		}
		return nil
	})
	return names, nil
}

func TestDashboardQueriesParseAndPanelsAreLaidOut(t *testing.T) {
	d := loadDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard title %q uid %q", d.Title, d.UID)
	}
	ids := map[int]string{}
	var check func([]dashboardPanel)
	check = func(ps []dashboardPanel) {
		for _, p := range ps {
			if prev, ok := ids[p.ID]; ok {
				t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
			}
			ids[p.ID] = p.Title
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.RefID == "" || refs[tg.RefID] {
					t.Errorf("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
			}
			check(p.Panels)
		}
	}
	check(d.Panels)
	for title, exprs := range dashboardExprs(t, d) {
		for _, e := range exprs {
			names, err := metricNames(e)
			if err != nil {
				t.Errorf("%s: %q: %v", title, e, err)
				continue
			}
			for _, n := range names {
				if !strings.HasPrefix(n, "llmux_") {
					t.Errorf("%s: %q selects %s, not an llmux metric", title, e, n)
				}
			}
		}
	}
}

// The dashboard shows what the picker reads: each metric of the llmux
// engineConfig and the HPA's metric has a panel.
func TestDashboardShowsEveryMetricThePickerAndHPARead(t *testing.T) {
	objs := loadManifests(t)
	shown := map[string]bool{}
	for _, exprs := range dashboardExprs(t, loadDashboard(t)) {
		for _, e := range exprs {
			names, _ := metricNames(e)
			for _, n := range names {
				shown[n] = true
			}
		}
	}
	for _, n := range pickerAndHPAMetrics(t, objs) {
		if !shown[n] {
			t.Errorf("%s is on no dashboard panel", n)
		}
	}
}

// pickerAndHPAMetrics lists the metric names the picker's llmux
// engineConfig and the HPA (through the adapter rules) read.
func pickerAndHPAMetrics(t *testing.T, objs []object) []string {
	t.Helper()
	e := loadEPPPod(t, objs)
	pod := loadLLMuxPod(t, objs)
	raw, _, _ := loadPicker(t, t.Context(), e.ConfigText)
	engines, _, _ := engineConfigs(t, raw)
	var names []string
	for k, spec := range engines[pod.Deployment.Spec.Template.Labels[engineTypeLabel]] {
		if k == "name" {
			continue
		}
		// A spec is a PromQL selector (name{label=value}).
		n, err := metricNames(spec)
		if err != nil {
			t.Fatalf("engineConfig %s: %q: %v", k, spec, err)
		}
		names = append(names, n...)
	}
	for _, r := range loadAdapterRules(t, objs) {
		n, err := metricNames(r.SeriesQuery)
		if err != nil {
			t.Fatalf("seriesQuery %q: %v", r.SeriesQuery, err)
		}
		names = append(names, n...)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Every llmux metric the picker config, the adapter rules and the
// dashboard name is on a live llmux's /metrics after one request (the
// per-request series appear at their first observation), except the
// GPU series, which llmux exports only where NVML is present: those must
// be declared in llmux's GPU collector (gpu/metrics.go of this repository).
func TestEveryMetricNamedIsOneLLMuxExports(t *testing.T) {
	bin := llmuxBin(t)
	objs := loadManifests(t)
	base, loras := synthModels(t, bin, t.TempDir(), 4096, "ad1")
	p := startLLMux(t, bin, pickerLLMuxConfig(base, loras, 2, 1, ""))
	// The same prompt twice: the second reuses the first's prefix, so
	// the cached-tokens counter has a series too.
	for range 2 {
		body := `{"model":"base","prompt":"Once upon a time there was a little robot who","max_tokens":8}`
		resp, err := http.Post(p.URL+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("completion: %s", resp.Status)
		}
	}
	names := pickerAndHPAMetrics(t, objs)
	for _, exprs := range dashboardExprs(t, loadDashboard(t)) {
		for _, e := range exprs {
			n, _ := metricNames(e)
			names = append(names, n...)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	gpuSource, err := os.ReadFile(filepath.Join("..", "..", "gpu", "metrics.go"))
	if err != nil {
		t.Fatalf("llmux's GPU collector: %v", err)
	}
	var fams map[string]bool
	waitFor(t, 30*time.Second, "the per-request series appear", func() (bool, string) {
		fams = map[string]bool{}
		for n := range scrape(t, p) {
			fams[n] = true
		}
		return fams["llmux_time_to_first_token_seconds"], fmt.Sprintf("%d families", len(fams))
	})
	for _, n := range names {
		switch {
		case fams[n]:
		case strings.HasPrefix(n, "llmux_gpu_") && bytes.Contains(gpuSource, []byte(`"`+n+`"`)):
			t.Logf("%s: declared in gpu/metrics.go (no NVML here)", n)
		default:
			t.Errorf("%s is named in the deployment but llmux does not export it", n)
		}
	}
	t.Logf("checked %d metric names", len(names))
}
