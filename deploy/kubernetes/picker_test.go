package kubernetes

// The endpoint picker's own code at v1.5.0 reading a live llmux under a
// known load: its default data layer built from our EndpointPickerConfig
// (the metrics data source polling /metrics, the core metrics extractor
// with the llmux engineConfig, chosen by the pod's engine-type label), and
// its legacy metrics client with the same metric names.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/types"

	backendmetrics "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/backend/metrics"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/datalayer"
	fwkdl "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/interface/datalayer"
	fwksched "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/interface/scheduling"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/scheduling"
)

// pickerLoad is what a test puts on llmux and expects the picker to read.
type pickerLoad struct {
	Running, Waiting int
	// Active must be among the picker's active models (running_lora_adapters).
	Active []string
}

// pickerLLMuxConfig is an llmux config for the load tests: `parallel`
// sequence slots per replica, a context long enough that the long
// generations never fill it (so none is preempted or ends while the
// picker reads), and a queue deadline long enough that queued requests
// are not refused. extra is appended as is.
func pickerLLMuxConfig(base string, loras map[string]string, parallel, replicas int, extra string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "host: 127.0.0.1\nparallel: %d\nreplicas: %d\nthreads: %d\n", parallel, replicas, replicas)
	b.WriteString("ctx_size: 131072\nmax_tokens_limit: 131072\nqueue_timeout: 30m\nlog_format: json\n")
	b.WriteString("admin_key: " + adminKey + "\n")
	b.WriteString(extra)
	fmt.Fprintf(&b, "models:\n  - name: base\n    path: %s\n    pinned: true\n", base)
	if len(loras) > 0 {
		b.WriteString("    adapters:\n")
	}
	for _, name := range slices.Sorted(maps.Keys(loras)) {
		fmt.Fprintf(&b, "      - name: %s\n        path: %s\n", name, loras[name])
	}
	return []byte(b.String())
}

// adminKey lets the tests read GET /-/status.
const adminKey = "picker-test-admin"

// waitLoaded waits until llmux's replica router knows that every replica
// holds the pinned model. (The router learns of a replica's pinned models
// at its next check, a few seconds after start; until then it sends
// every request to the replica that the first one made "load" the model,
// where they queue behind its slots while the other replicas idle.)
func waitLoaded(t *testing.T, p *llmuxProcess, model string, replicas int) {
	t.Helper()
	waitFor(t, time.Minute, fmt.Sprintf("the router knows %s is loaded on %d replicas", model, replicas), func() (bool, string) {
		req, _ := http.NewRequest(http.MethodGet, p.URL+"/-/status", nil)
		req.Header.Set("Authorization", "Bearer "+adminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var st struct {
			Deployments []struct {
				Replicas []struct {
					Name   string   `json:"name"`
					Models []string `json:"models"`
				} `json:"replicas"`
			} `json:"deployments"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return false, fmt.Sprintf("%s: %v", resp.Status, err)
		}
		n, desc := 0, ""
		for _, d := range st.Deployments {
			for _, r := range d.Replicas {
				if slices.Contains(r.Models, model) {
					n++
				}
				desc += fmt.Sprintf("%s %v; ", r.Name, r.Models)
			}
		}
		return n == replicas, desc
	})
}

// longGeneration is far longer than any test waits: it holds its slot
// until the test hangs up.
const longGeneration = 100_000

// loadLLMux starts one streaming generation per model in running and waits
// until each has streamed a token (it holds a slot), then starts one per
// model in queued, which find every slot taken.
func loadLLMux(t *testing.T, p *llmuxProcess, running, queued []string) {
	t.Helper()
	var gens []*generation
	for i, m := range running {
		g := startGeneration(t, p, m, longGeneration)
		gens = append(gens, g)
		if !g.waitFirstToken(t, time.Minute) {
			t.Fatalf("generation %d of %d on %s has no token after a minute; llmux's schedulers: %s", i+1, len(running), m, schedulerGauges(t, p))
		}
	}
	for _, m := range queued {
		startGeneration(t, p, m, longGeneration)
	}
	for _, g := range gens {
		if !g.running() {
			t.Fatalf("a running generation on %s ended", g.Model)
		}
	}
}

// checkPickerMetrics compares what the picker read with the load, and
// with llmux's own per-model series scraped just after (KV cells only
// grow while the streams run, so a later scrape bounds the ratio).
func checkPickerMetrics(m *fwkdl.Metrics, want pickerLoad, fams map[string]*dto.MetricFamily) (bool, string) {
	desc := fmt.Sprintf("picker read %+v", *m)
	var problems []string
	if m.RunningRequestsSize != want.Running {
		problems = append(problems, fmt.Sprintf("running %d, want %d", m.RunningRequestsSize, want.Running))
	}
	if m.WaitingQueueSize != want.Waiting {
		problems = append(problems, fmt.Sprintf("waiting %d, want %d", m.WaitingQueueSize, want.Waiting))
	}
	used, cells := sumGauge(fams["llmux_kv_cells_used"]), sumGauge(fams["llmux_kv_cells"])
	if m.KVCacheUsagePercent <= 0 || m.KVCacheUsagePercent > 1 {
		problems = append(problems, fmt.Sprintf("KV usage %v, want in (0, 1]", m.KVCacheUsagePercent))
	} else if cells > 0 && m.KVCacheUsagePercent > used/cells+1e-9 {
		problems = append(problems, fmt.Sprintf("KV usage %v above llmux's cells used %v / cells %v", m.KVCacheUsagePercent, used, cells))
	}
	for _, a := range want.Active {
		if _, ok := m.ActiveModels[a]; !ok {
			problems = append(problems, fmt.Sprintf("%q not among active models %v", a, slices.Sorted(maps.Keys(m.ActiveModels))))
		}
	}
	if m.MaxActiveModels < len(m.ActiveModels) {
		problems = append(problems, fmt.Sprintf("max active models %d below the %d active", m.MaxActiveModels, len(m.ActiveModels)))
	}
	if m.CacheBlockSize <= 0 || m.CacheNumBlocks <= 0 {
		problems = append(problems, fmt.Sprintf("cache geometry %d × %d", m.CacheBlockSize, m.CacheNumBlocks))
	} else if int(cells)/m.CacheBlockSize != m.CacheNumBlocks {
		problems = append(problems, fmt.Sprintf("%d blocks of %d, llmux has %v KV cells", m.CacheNumBlocks, m.CacheBlockSize, cells))
	}
	if len(problems) > 0 {
		return false, desc + ": " + strings.Join(problems, "; ")
	}
	return true, desc
}

// schedulerGauges lists llmux's per-replica running and waiting gauges.
func schedulerGauges(t *testing.T, p *llmuxProcess) string {
	t.Helper()
	fams := scrape(t, p)
	var out []string
	for _, name := range []string{"llmux_requests_running", "llmux_requests_waiting", "llmux_num_requests_running", "llmux_num_requests_waiting"} {
		for _, m := range fams[name].GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			out = append(out, fmt.Sprintf("%s{%s} %v", name, strings.Join(ls, ","), m.GetGauge().GetValue()))
		}
	}
	return strings.Join(out, "; ")
}

func sumGauge(f *dto.MetricFamily) float64 {
	var s float64
	for _, m := range f.GetMetric() {
		s += m.GetGauge().GetValue()
	}
	return s
}

// pickerEndpoint registers llmux with a data-layer runtime built from the
// EndpointPickerConfig in the manifests, as the EPP does for a pod of the
// pool: same labels as the llmux pod template, metrics host = llmux's
// address. The runtime polls it every 50 ms from then on.
func pickerEndpoint(t *testing.T, ctx context.Context, objs []object, p *llmuxProcess) fwkdl.Endpoint {
	t.Helper()
	e := loadEPPPod(t, objs)
	_, _, rt := loadPicker(t, ctx, e.ConfigText)
	return addEndpoint(t, ctx, rt, objs, p, 0)
}

// addEndpoint registers llmux as pod number i of the pool with rt.
func addEndpoint(t *testing.T, ctx context.Context, rt *datalayer.Runtime, objs []object, p *llmuxProcess, i int) fwkdl.Endpoint {
	t.Helper()
	pod := loadLLMuxPod(t, objs)
	host, port, err := net.SplitHostPort(p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%s-%d", pod.Deployment.Name, i)
	meta := &fwkdl.EndpointMetadata{
		NamespacedName: types.NamespacedName{Namespace: pod.Deployment.Namespace, Name: name},
		PodName:        name,
		Address:        host,
		Port:           port,
		MetricsHost:    p.Addr,
		Labels:         maps.Clone(pod.Deployment.Spec.Template.Labels),
	}
	ep := rt.NewEndpoint(ctx, meta, nil)
	if ep == nil {
		t.Fatal("the data-layer runtime made no endpoint")
	}
	t.Cleanup(func() { rt.ReleaseEndpoint(ep) })
	return ep
}

// legacyClient is the EPP's legacy metrics client with the metric names
// of the llmux engineConfig in the manifests.
func legacyClient(t *testing.T, objs []object) backendmetrics.PodMetricsClient {
	t.Helper()
	e := loadEPPPod(t, objs)
	pod := loadLLMuxPod(t, objs)
	raw, _, _ := loadPicker(t, context.Background(), e.ConfigText)
	engines, _, _ := engineConfigs(t, raw)
	ec := engines[pod.Deployment.Spec.Template.Labels[engineTypeLabel]]
	c, err := backendmetrics.NewPodMetricsClientImpl(logr.Discard(), backendmetrics.Config{
		ModelServerMetricsScheme:     "http",
		ModelServerMetricsPath:       "/metrics",
		TotalQueuedRequestsMetric:    ec["queuedRequestsSpec"],
		TotalRunningRequestsMetric:   ec["runningRequestsSpec"],
		KVCacheUsagePercentageMetric: ec["kvUsageSpec"],
		LoRAInfoMetric:               ec["loraSpec"],
		CacheInfoMetric:              ec["cacheInfoSpec"],
	})
	if err != nil {
		t.Fatalf("legacy metrics client: %v", err)
	}
	return c
}

// expectPickerReads polls both readers until each reports the load.
func expectPickerReads(t *testing.T, objs []object, p *llmuxProcess, want pickerLoad) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Run("data layer", func(t *testing.T) {
		ep := pickerEndpoint(t, ctx, objs, p)
		t.Log(waitFor(t, time.Minute, "the picker's data layer reads the load", func() (bool, string) {
			return checkPickerMetrics(ep.GetMetrics(), want, scrape(t, p))
		}))
	})
	t.Run("legacy client", func(t *testing.T) {
		c := legacyClient(t, objs)
		meta := &fwkdl.EndpointMetadata{MetricsHost: p.Addr}
		t.Log(waitFor(t, time.Minute, "the picker's legacy client reads the load", func() (bool, string) {
			m, err := c.FetchMetrics(ctx, meta, fwkdl.NewMetrics())
			if err != nil {
				return false, err.Error()
			}
			return checkPickerMetrics(m, want, scrape(t, p))
		}))
	})
}

// Two slots: one stream on the base model and one on adapter ad1 hold
// them, three more requests queue behind.
func TestPickerReadsQueueRunningKVAndAdaptersOfALiveLLMux(t *testing.T) {
	bin := llmuxBin(t)
	objs := loadManifests(t)
	base, loras := synthModels(t, bin, t.TempDir(), 131072, "ad1", "ad2")
	p := startLLMux(t, bin, pickerLLMuxConfig(base, loras, 2, 1, ""))
	waitLoaded(t, p, "base", 1)
	loadLLMux(t, p, []string{"base", "ad1"}, []string{"base", "ad2", "ad1"})
	expectPickerReads(t, objs, p, pickerLoad{Running: 2, Waiting: 3, Active: []string{"base", "ad1"}})
}

// Two replica processes of two slots each: the picker must read the
// pod's totals, not one replica's (it takes a single series per figure).
func TestPickerReadsThePodsTotalsAcrossReplicas(t *testing.T) {
	bin := llmuxBin(t)
	objs := loadManifests(t)
	base, _ := synthModels(t, bin, t.TempDir(), 131072)
	p := startLLMux(t, bin, pickerLLMuxConfig(base, nil, 2, 2, ""))
	waitLoaded(t, p, "base", 2)
	loadLLMux(t, p, slices.Repeat([]string{"base"}, 4), slices.Repeat([]string{"base"}, 3))
	expectPickerReads(t, objs, p, pickerLoad{Running: 4, Waiting: 3, Active: []string{"base"}})
}

// With --max-ongoing-requests the replica router holds requests once
// every replica has that many in flight: those wait in the pod too, and
// the picker and the autoscaler must count them.
func TestPickerCountsRequestsHeldByTheReplicaRouter(t *testing.T) {
	bin := llmuxBin(t)
	objs := loadManifests(t)
	base, _ := synthModels(t, bin, t.TempDir(), 131072)
	p := startLLMux(t, bin, pickerLLMuxConfig(base, nil, 2, 2, "max_ongoing_requests: 2\n"))
	waitLoaded(t, p, "base", 2)
	loadLLMux(t, p, slices.Repeat([]string{"base"}, 4), slices.Repeat([]string{"base"}, 3))
	expectPickerReads(t, objs, p, pickerLoad{Running: 4, Waiting: 3, Active: []string{"base"}})
}

// twoPods starts two llmux processes (two pods of the pool, two slots
// each, adapter ad1 available on both) and a picker built from the
// manifests' EndpointPickerConfig polling both.
func twoPods(t *testing.T) (objs []object, pods [2]*llmuxProcess, eps [2]fwkdl.Endpoint, sched *scheduling.Scheduler) {
	t.Helper()
	bin := llmuxBin(t)
	objs = loadManifests(t)
	base, loras := synthModels(t, bin, t.TempDir(), 131072, "ad1")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	_, cfg, rt := loadPicker(t, ctx, loadEPPPod(t, objs).ConfigText)
	for i := range pods {
		pods[i] = startLLMux(t, bin, pickerLLMuxConfig(base, loras, 2, 1, ""))
		waitLoaded(t, pods[i], "base", 1)
		eps[i] = addEndpoint(t, ctx, rt, objs, pods[i], i)
	}
	return objs, pods, eps, scheduling.NewSchedulerWithConfig(cfg.SchedulerConfig)
}

// pick runs the picker's scheduler (the manifests' profile: its scorers
// and weights, and the picker the loader adds) for a completion request
// for model over the two pods as the data layer sees them now, and
// returns the chosen pod's index.
func pick(t *testing.T, sched *scheduling.Scheduler, eps [2]fwkdl.Endpoint, model string) int {
	t.Helper()
	var cands []fwksched.Endpoint
	for _, ep := range eps {
		cands = append(cands, fwksched.NewEndpoint(ep.GetMetadata(), ep.GetMetrics(), ep.GetAttributes()))
	}
	req := &fwksched.LLMRequest{
		RequestId:   fmt.Sprintf("req-%d", generations.Add(1)),
		TargetModel: model,
		Body:        &fwksched.LLMRequestBody{Completions: &fwksched.CompletionsRequest{Prompt: fwksched.Prompt{Raw: "Tell me a story about a lighthouse."}}},
	}
	res, err := sched.Schedule(context.Background(), req, cands)
	if err != nil {
		t.Fatalf("picker: %v", err)
	}
	targets := res.ProfileResults[res.PrimaryProfileName].TargetEndpoints
	if len(targets) == 0 {
		t.Fatal("the picker chose no pod")
	}
	for i, ep := range eps {
		if targets[0].GetMetadata().NamespacedName == ep.GetMetadata().NamespacedName {
			return i
		}
	}
	t.Fatalf("the picker chose %v, not one of the pods", targets[0].GetMetadata().NamespacedName)
	return -1
}

// Pod 0 has both slots busy and three requests queued; pod 1 is idle: the
// picker, reading llmux's figures, sends new work to pod 1, every time.
func TestPickerSendsNewWorkToTheIdleLLMuxPod(t *testing.T) {
	_, pods, eps, sched := twoPods(t)
	loadLLMux(t, pods[0], []string{"base", "base"}, []string{"base", "base", "base"})
	waitFor(t, time.Minute, "the picker sees pod 0 loaded", func() (bool, string) {
		m := eps[0].GetMetrics()
		return m.WaitingQueueSize == 3 && m.RunningRequestsSize == 2, fmt.Sprintf("pod 0 %+v", *m)
	})
	for range 20 {
		if got := pick(t, sched, eps, "base"); got != 1 {
			t.Fatalf("the picker chose pod %d; pod 0: %+v; pod 1: %+v", got, *eps[0].GetMetrics(), *eps[1].GetMetrics())
		}
	}
}

// Both pods idle; only pod 1 has adapter ad1 loaded (it served a request
// for it): the picker's LoRA affinity sends ad1's requests there, named
// either ad1 or base:ad1.
func TestPickerSendsAnAdapterRequestToThePodThatHasItLoaded(t *testing.T) {
	_, pods, eps, sched := twoPods(t)
	body := `{"model":"ad1","prompt":"Once upon a time","max_tokens":4}`
	resp, err := http.Post(pods[1].URL+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("completion on ad1: %s", resp.Status)
	}
	waitFor(t, time.Minute, "the picker sees ad1 active on pod 1 only", func() (bool, string) {
		_, on0 := eps[0].GetMetrics().ActiveModels["ad1"]
		_, on1 := eps[1].GetMetrics().ActiveModels["ad1"]
		return on1 && !on0, fmt.Sprintf("pod 0 %v, pod 1 %v", eps[0].GetMetrics().ActiveModels, eps[1].GetMetrics().ActiveModels)
	})
	// Either name of the adapter finds it: llmux lists both.
	for _, name := range []string{"ad1", "base:ad1"} {
		for range 20 {
			if got := pick(t, sched, eps, name); got != 1 {
				t.Fatalf("the picker chose pod %d for %s; pod 0: %+v; pod 1: %+v", got, name, *eps[0].GetMetrics(), *eps[1].GetMetrics())
			}
		}
	}
}
