package kubernetes

// The endpoint picker: its Deployment's flags, RBAC and configuration,
// checked with the extension's own code at the pinned version.

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	eppconfig "sigs.k8s.io/gateway-api-inference-extension/apix/config/v1alpha1"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/config"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/config/loader"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/datalayer"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/flowcontrol"
	fwkplugin "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/interface/plugin"
	extractormetrics "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/datalayer/extractor/metrics"
	sourcemetrics "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/datalayer/source/metrics"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/flowcontrol/fairness"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/flowcontrol/ordering"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/flowcontrol/saturationdetector/concurrency"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/flowcontrol/saturationdetector/utilization"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/flowcontrol/usagelimits"
	reqdataprodprefix "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/requestcontrol/dataproducer/approximateprefix"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/requesthandling/parsers/openai"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/scheduling/picker"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/scheduling/profile"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/scheduling/scorer/kvcacheutilization"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/scheduling/scorer/loraaffinity"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/scheduling/scorer/prefix"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/scheduling/scorer/queuedepth"
	"sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/scheduling/scorer/runningrequests"
	runserver "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/server"
)

const (
	eppDeployment = "llmux-epp"
	eppContainer  = "epp"
	poolName      = "llmux"
)

// registerPickerPlugins registers, under the extension's own type names,
// the in-tree plugins the EPP binary registers at start
// (cmd/epp/runner.registerInTreePlugins) that a scheduling configuration
// like ours can name, and the feature gates it knows. A type our config
// names that is not here fails the loader test: add it only if the EPP
// binary registers it too.
var registerPickerPlugins = sync.OnceFunc(func() {
	for typ, factory := range map[string]fwkplugin.FactoryFunc{
		prefix.PrefixCacheScorerPluginType:              prefix.PrefixCachePluginFactory,
		picker.MaxScorePickerType:                       picker.MaxScorePickerFactory,
		picker.RandomPickerType:                         picker.RandomPickerFactory,
		picker.WeightedRandomPickerType:                 picker.WeightedRandomPickerFactory,
		profile.SingleProfileHandlerType:                profile.SingleProfileHandlerFactory,
		kvcacheutilization.KvCacheUtilizationScorerType: kvcacheutilization.KvCacheUtilizationScorerFactory,
		queuedepth.QueueScorerType:                      queuedepth.QueueScorerFactory,
		runningrequests.RunningRequestsSizeScorerType:   runningrequests.RunningRequestsSizeScorerFactory,
		loraaffinity.LoraAffinityScorerType:             loraaffinity.LoraAffinityScorerFactory,
		reqdataprodprefix.ApproxPrefixCachePluginType:   reqdataprodprefix.ApproxPrefixCacheFactory,
		sourcemetrics.MetricsDataSourceType:             sourcemetrics.MetricsDataSourceFactory,
		extractormetrics.MetricsExtractorType:           extractormetrics.CoreMetricsExtractorFactory,
		openai.OpenAIParserType:                         openai.OpenAIParserPluginFactory,
		concurrency.ConcurrencyDetectorType:             concurrency.ConcurrencyDetectorFactory,
		utilization.UtilizationDetectorType:             utilization.UtilizationDetectorFactory,
		fairness.GlobalStrictFairnessPolicyType:         fairness.GlobalStrictFairnessPolicyFactory,
		fairness.RoundRobinFairnessPolicyType:           fairness.RoundRobinFairnessPolicyFactory,
		ordering.FCFSOrderingPolicyType:                 ordering.FCFSOrderingPolicyFactory,
		ordering.EDFOrderingPolicyType:                  ordering.EDFOrderingPolicyFactory,
		usagelimits.StaticUsageLimitPolicyType:          usagelimits.StaticPolicyFactory,
	} {
		fwkplugin.Register(typ, factory)
	}
	loader.RegisterFeatureGate(datalayer.ExperimentalDatalayerFeatureGate)
	loader.RegisterFeatureGate(datalayer.EnableLegacyMetricsFeatureGate)
	loader.RegisterFeatureGate(flowcontrol.FeatureGate)
	// The plugins log through controller-runtime's logger; the tests
	// judge what they read, not their logs.
	ctrllog.SetLogger(logr.Discard())
})

// eppPod is the picker's Deployment, container and parsed flags.
type eppPod struct {
	Deployment *appsv1.Deployment
	Container  *corev1.Container
	Opts       *runserver.Options
	ConfigText []byte // the EndpointPickerConfig it reads
}

func loadEPPPod(t *testing.T, objs []object) *eppPod {
	t.Helper()
	d := find[*appsv1.Deployment](t, objs, eppDeployment)
	c := container(t, &d.Spec.Template.Spec, eppContainer)
	opts := runserver.NewOptions()
	fs := pflag.NewFlagSet("epp", pflag.ContinueOnError)
	opts.AddFlags(fs)
	if err := fs.Parse(append(append([]string{}, c.Command...), c.Args...)); err != nil {
		t.Fatalf("EPP args %q: %v", c.Args, err)
	}
	if err := opts.Complete(); err != nil {
		t.Fatalf("EPP options: %v", err)
	}
	if err := opts.Validate(); err != nil {
		t.Fatalf("EPP options: %v", err)
	}
	p := &eppPod{Deployment: d, Container: c, Opts: opts}
	if opts.ConfigFile == "" {
		t.Fatal("the EPP has no --config-file")
	}
	p.ConfigText = mountedFile(t, objs, d, c, opts.ConfigFile)
	return p
}

// The flags pass the EPP's own parsing and validation (Options.AddFlags,
// Complete, Validate, as cmd/epp runs them), name our pool, and their
// ports are the ones the pool, Service and probes use.
func TestEndpointPickerFlagsPassItsOwnValidationAndMatchThePool(t *testing.T) {
	objs := loadManifests(t)
	e := loadEPPPod(t, objs)
	pool := find[*infv1.InferencePool](t, objs, poolName)
	if e.Opts.PoolName != pool.Name || e.Opts.PoolGroup != infv1.GroupName {
		t.Errorf("EPP watches pool %s (group %s), want %s (group %s)", e.Opts.PoolName, e.Opts.PoolGroup, pool.Name, infv1.GroupName)
	}
	if e.Opts.PoolNamespace != pool.Namespace {
		t.Errorf("EPP pool namespace %q, the pool is in %q", e.Opts.PoolNamespace, pool.Namespace)
	}
	ref := pool.Spec.EndpointPickerRef
	if ref.Kind != "" && ref.Kind != "Service" || ref.Port == nil {
		t.Fatalf("InferencePool endpointPickerRef %+v: want a Service and a port", ref)
	}
	svc := find[*corev1.Service](t, objs, string(ref.Name))
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(e.Deployment.Spec.Template.Labels)) {
		t.Errorf("Service %s does not select the EPP pods", svc.Name)
	}
	var target *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == int32(ref.Port.Number) {
			target = &svc.Spec.Ports[i]
		}
	}
	if target == nil {
		t.Fatalf("Service %s has no port %d (the pool's endpointPickerRef)", svc.Name, ref.Port.Number)
	}
	if got := containerPort(t, e.Container, target.TargetPort); int(got) != e.Opts.GRPCPort {
		t.Errorf("Service port %d reaches container port %d; the EPP serves ext_proc on %d", target.Port, got, e.Opts.GRPCPort)
	}
	for name, probe := range map[string]*corev1.Probe{"liveness": e.Container.LivenessProbe, "readiness": e.Container.ReadinessProbe} {
		if probe == nil || probe.GRPC == nil {
			t.Errorf("EPP %s probe: want a gRPC probe", name)
			continue
		}
		if int(probe.GRPC.Port) != e.Opts.GRPCHealthPort {
			t.Errorf("EPP %s probe on port %d, the EPP's health port is %d", name, probe.GRPC.Port, e.Opts.GRPCHealthPort)
		}
	}
	if !containerHasPort(e.Container, int32(e.Opts.GRPCPort)) || !containerHasPort(e.Container, int32(e.Opts.MetricsPort)) {
		t.Errorf("EPP container ports %v lack %d (ext_proc) or %d (metrics)", e.Container.Ports, e.Opts.GRPCPort, e.Opts.MetricsPort)
	}
	// The picker should outlive the drain of every pod it routes to.
	llmuxGrace := loadLLMuxPod(t, objs).Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds
	eppGrace := e.Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds
	if llmuxGrace == nil || eppGrace == nil || *eppGrace < *llmuxGrace {
		t.Errorf("EPP terminationGracePeriodSeconds %v shorter than llmux's %v", deref(eppGrace), deref(llmuxGrace))
	}
	if ref.FailureMode != infv1.EndpointPickerFailOpen && ref.FailureMode != infv1.EndpointPickerFailClose {
		t.Errorf("endpointPickerRef.failureMode %q", ref.FailureMode)
	}
}

func deref(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

// The EPP's service account may read what the EPP watches: the pool's
// pods, the InferencePool, and the extension's alpha objects.
func TestEndpointPickerServiceAccountMayWatchPodsAndPool(t *testing.T) {
	objs := loadManifests(t)
	e := loadEPPPod(t, objs)
	sa := e.Deployment.Spec.Template.Spec.ServiceAccountName
	if sa == "" {
		t.Fatal("the EPP runs as the default service account")
	}
	find[*corev1.ServiceAccount](t, objs, sa)
	ns := e.Deployment.Namespace
	var rules []rbacv1.PolicyRule
	for _, rb := range all[*rbacv1.RoleBinding](objs) {
		if !bindsServiceAccount(rb.Subjects, ns, sa, rb.Namespace) {
			continue
		}
		switch rb.RoleRef.Kind {
		case "Role":
			rules = append(rules, find[*rbacv1.Role](t, objs, rb.RoleRef.Name).Rules...)
		case "ClusterRole":
			rules = append(rules, find[*rbacv1.ClusterRole](t, objs, rb.RoleRef.Name).Rules...)
		}
	}
	var clusterRules []rbacv1.PolicyRule
	for _, crb := range all[*rbacv1.ClusterRoleBinding](objs) {
		if bindsServiceAccount(crb.Subjects, ns, sa, "") {
			clusterRules = append(clusterRules, find[*rbacv1.ClusterRole](t, objs, crb.RoleRef.Name).Rules...)
		}
	}
	for _, need := range []struct{ group, resource string }{
		{"", "pods"},
		{infv1.GroupName, "inferencepools"},
		{"inference.networking.x-k8s.io", "inferenceobjectives"},
		{"inference.networking.x-k8s.io", "inferencemodelrewrites"},
	} {
		for _, verb := range []string{"get", "list", "watch"} {
			if !allows(rules, need.group, need.resource, verb) && !allows(clusterRules, need.group, need.resource, verb) {
				t.Errorf("service account %s may not %s %s.%s", sa, verb, need.resource, need.group)
			}
		}
	}
	// With its /metrics behind authentication (the default), the EPP
	// reviews tokens.
	if e.Opts.MetricsEndpointAuth {
		if !allows(clusterRules, "authentication.k8s.io", "tokenreviews", "create") ||
			!allows(clusterRules, "authorization.k8s.io", "subjectaccessreviews", "create") {
			t.Errorf("metrics auth on, but %s may not create tokenreviews and subjectaccessreviews", sa)
		}
	}
}

func bindsServiceAccount(subjects []rbacv1.Subject, ns, name, bindingNS string) bool {
	for _, s := range subjects {
		sns := s.Namespace
		if sns == "" {
			sns = bindingNS
		}
		if s.Kind == rbacv1.ServiceAccountKind && s.Name == name && sns == ns {
			return true
		}
	}
	return false
}

func allows(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	has := func(list []string, v string) bool { return slices.Contains(list, v) || slices.Contains(list, "*") }
	for _, r := range rules {
		if has(r.APIGroups, group) && has(r.Resources, resource) && has(r.Verbs, verb) {
			return true
		}
	}
	return false
}

// loadPicker runs the EPP's own configuration path on text: LoadRawConfig
// (strict decoding, defaults, feature gates), InstantiateAndConfigure
// (every plugin built by its factory from its parameters, scheduling
// profiles and data layer wired), then the data-layer runtime's Configure.
func loadPicker(t *testing.T, ctx context.Context, text []byte) (*eppconfig.EndpointPickerConfig, *config.Config, *datalayer.Runtime) {
	t.Helper()
	registerPickerPlugins()
	logger := logr.Discard()
	raw, gates, err := loader.LoadRawConfig(text, logger)
	if err != nil {
		t.Fatalf("EPP loader: %v", err)
	}
	handle := fwkplugin.NewEppHandle(ctx, func() []types.NamespacedName { return nil })
	cfg, err := loader.InstantiateAndConfigure(raw, handle, logger)
	if err != nil {
		t.Fatalf("EPP loader: %v", err)
	}
	if gates[datalayer.EnableLegacyMetricsFeatureGate] {
		t.Fatalf("the config turns on %s: its metric names would come from flags the EPP refuses", datalayer.EnableLegacyMetricsFeatureGate)
	}
	rt := datalayer.NewRuntime(0)
	if err := rt.Configure(cfg.DataConfig, true, "", logger); err != nil {
		t.Fatalf("EPP data layer: %v", err)
	}
	t.Cleanup(func() { _ = rt.Stop() })
	return raw, cfg, rt
}

// engineConfigs returns the engineConfigs of the core metrics extractor's
// parameters, by name, and its defaultEngine and engineLabelKey.
func engineConfigs(t *testing.T, raw *eppconfig.EndpointPickerConfig) (map[string]map[string]string, string, string) {
	t.Helper()
	for _, p := range raw.Plugins {
		if p.Type != extractormetrics.MetricsExtractorType {
			continue
		}
		var params struct {
			EngineLabelKey string              `json:"engineLabelKey"`
			DefaultEngine  string              `json:"defaultEngine"`
			EngineConfigs  []map[string]string `json:"engineConfigs"`
		}
		if err := json.Unmarshal(p.Parameters, &params); err != nil {
			t.Fatalf("%s parameters: %v", p.Type, err)
		}
		out := map[string]map[string]string{}
		for _, ec := range params.EngineConfigs {
			out[ec["name"]] = ec
		}
		return out, params.DefaultEngine, params.EngineLabelKey
	}
	t.Fatalf("the EPP config has no %s plugin", extractormetrics.MetricsExtractorType)
	return nil, "", ""
}

func TestEndpointPickerConfigLoadsWithTheExtensionsLoaderAndRuntime(t *testing.T) {
	objs := loadManifests(t)
	e := loadEPPPod(t, objs)
	raw, cfg, _ := loadPicker(t, context.Background(), e.ConfigText)
	if cfg.DataConfig == nil || len(cfg.DataConfig.Sources) == 0 {
		t.Fatal("no data-layer source: the picker would read no metrics")
	}
	var extractors []string
	for _, s := range cfg.DataConfig.Sources {
		for _, x := range s.Extractors {
			extractors = append(extractors, x.TypedName().Type)
		}
	}
	if !slices.Contains(extractors, extractormetrics.MetricsExtractorType) {
		t.Errorf("data-layer extractors %v lack %s", extractors, extractormetrics.MetricsExtractorType)
	}
	engines, _, labelKey := engineConfigs(t, raw)
	if labelKey == "" {
		labelKey = extractormetrics.DefaultEngineTypeLabelKey
	}
	pod := loadLLMuxPod(t, objs)
	engine := pod.Deployment.Spec.Template.Labels[labelKey]
	ec, ok := engines[engine]
	if !ok {
		t.Fatalf("llmux pods have %s=%q, which no engineConfig names (%v)", labelKey, engine, keys(engines))
	}
	for _, k := range []string{"queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec", "loraSpec", "cacheInfoSpec"} {
		if ec[k] == "" {
			t.Errorf("engineConfig %s: %s unset (the picker would not read it)", engine, k)
		}
	}
	if len(ec) != 6 {
		t.Errorf("engineConfig %s has keys %v: want name and the five specs", engine, keys(ec))
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// In v1.5.0 the EPP refuses the old per-metric flags: the legacy metrics
// path (the enableLegacyMetrics feature gate) can read only vLLM's names,
// which is why llmux's names go in the data layer's engineConfigs.
func TestEndpointPickerRefusesTheLegacyMetricFlags(t *testing.T) {
	opts := runserver.NewOptions()
	fs := pflag.NewFlagSet("epp", pflag.ContinueOnError)
	opts.AddFlags(fs)
	if err := fs.Parse([]string{"--pool-name", poolName, "--total-queued-requests-metric", "llmux_num_requests_waiting"}); err != nil {
		t.Fatal(err)
	}
	if err := opts.Validate(); err == nil || !strings.Contains(err.Error(), "deprecated") {
		t.Errorf("Validate with --total-queued-requests-metric: %v; want a refusal", err)
	}
}

func TestHTTPRouteSendsGatewayTrafficToTheInferencePool(t *testing.T) {
	objs := loadManifests(t)
	route := find[*gatewayv1.HTTPRoute](t, objs, "llmux")
	pool := find[*infv1.InferencePool](t, objs, poolName)
	gws := all[*gatewayv1.Gateway](objs)
	if len(gws) != 1 {
		t.Fatalf("want one Gateway, got %d", len(gws))
	}
	attached := false
	for _, pr := range route.Spec.ParentRefs {
		if string(pr.Name) == gws[0].Name && (pr.Kind == nil || *pr.Kind == "Gateway") {
			attached = true
		}
	}
	if !attached {
		t.Errorf("HTTPRoute is not attached to Gateway %s", gws[0].Name)
	}
	var toPool int
	for _, rule := range route.Spec.Rules {
		for _, br := range rule.BackendRefs {
			if br.Group != nil && string(*br.Group) == infv1.GroupName && br.Kind != nil && *br.Kind == "InferencePool" && string(br.Name) == pool.Name {
				toPool++
			}
		}
	}
	if toPool == 0 {
		t.Errorf("no HTTPRoute backendRef names InferencePool %s (group %s)", pool.Name, infv1.GroupName)
	}
}
