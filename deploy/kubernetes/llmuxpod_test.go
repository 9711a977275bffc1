package kubernetes

// Rules for the llmux Deployment, its config file and what points at it.

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	infv1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
)

const (
	llmuxDeployment = "llmux"
	llmuxContainer  = "llmux"
	// gpuResource is what the NVIDIA device plugin advertises.
	gpuResource = corev1.ResourceName("nvidia.com/gpu")
	// engineTypeLabel is the pod label the endpoint picker's metrics
	// extractor reads to choose an engine config (its default
	// engineLabelKey).
	engineTypeLabel = "inference.networking.k8s.io/engine-type"
)

// llmuxPod is the llmux Deployment, its container and its effective
// llmux settings.
type llmuxPod struct {
	Deployment *appsv1.Deployment
	Container  *corev1.Container
	ConfigPath string         // --config
	ConfigText []byte         // the file the pod would read there
	Config     map[string]any // ConfigText, parsed
	args       []string       // serve's arguments
}

func loadLLMuxPod(t *testing.T, objs []object) *llmuxPod {
	t.Helper()
	d := find[*appsv1.Deployment](t, objs, llmuxDeployment)
	c := container(t, &d.Spec.Template.Spec, llmuxContainer)
	argv := append(append([]string{}, c.Command...), c.Args...)
	i := indexOf(argv, "serve")
	if i < 0 {
		t.Fatalf("llmux container runs %q: want `llmux serve ...`", argv)
	}
	p := &llmuxPod{Deployment: d, Container: c, args: argv[i+1:]}
	cfg, ok := p.flagOrEnv("config")
	if !ok {
		t.Fatalf("llmux container: no --config (or LLMUX_CONFIG)")
	}
	p.ConfigPath = cfg
	p.ConfigText = mountedFile(t, objs, d, c, cfg)
	if err := yaml.Unmarshal(p.ConfigText, &p.Config); err != nil {
		t.Fatalf("%s: %v", cfg, err)
	}
	return p
}

func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

// flagOrEnv finds an llmux flag on the command line (--name=v, --name v,
// -name v) or as LLMUX_NAME in the container's environment.
func (p *llmuxPod) flagOrEnv(name string) (string, bool) {
	for i, a := range p.args {
		for _, prefix := range []string{"--", "-"} {
			if a == prefix+name && i+1 < len(p.args) {
				return p.args[i+1], true
			}
			if v, ok := strings.CutPrefix(a, prefix+name+"="); ok {
				return v, true
			}
		}
	}
	env := "LLMUX_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	for _, e := range p.Container.Env {
		if e.Name == env {
			return e.Value, true
		}
	}
	return "", false
}

// setting is llmux's value for a flag as the pod would run it, with
// llmux's precedence (flag > environment > config file > default); the
// default is read from the llmux binary's own help when LLMUX_BIN is set.
func (p *llmuxPod) setting(t *testing.T, name string) string {
	t.Helper()
	if v, ok := p.flagOrEnv(name); ok {
		return v
	}
	for _, key := range []string{name, strings.ReplaceAll(name, "-", "_")} {
		if v, ok := p.Config[key]; ok {
			if list, ok := v.([]any); ok {
				parts := make([]string, len(list))
				for i, x := range list {
					parts[i] = fmt.Sprint(x)
				}
				return strings.Join(parts, ",")
			}
			return fmt.Sprint(v)
		}
	}
	return llmuxDefault(t, name)
}

// llmuxDefault reads a flag's default from `llmux serve -h`.
func llmuxDefault(t *testing.T, name string) string {
	t.Helper()
	bin := llmuxBinOrEmpty()
	if bin == "" {
		t.Fatalf("the manifests leave llmux's %s at its default, which is unknown without LLMUX_BIN: set it in the config file", name)
	}
	out, _ := exec.Command(bin, "serve", "-h").CombinedOutput() // flag's help exits non-zero
	re := regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(name) + `(?: \S+)?\n((?:\s{4,}.*\n)+)`)
	m := re.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("llmux serve -h: no flag %q", name)
	}
	d := regexp.MustCompile(`\(default "?([^")]*)"?\)`).FindStringSubmatch(m[1])
	if d == nil {
		return ""
	}
	return d[1]
}

// mountedFile returns the content of file path inside container c of
// Deployment d, which must come from a ConfigMap volume in the manifests.
func mountedFile(t *testing.T, objs []object, d *appsv1.Deployment, c *corev1.Container, file string) []byte {
	t.Helper()
	dir, base := path.Dir(file), path.Base(file)
	for _, vm := range c.VolumeMounts {
		if vm.MountPath != dir {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != vm.Name {
				continue
			}
			if v.ConfigMap == nil {
				t.Fatalf("%s is mounted from volume %q, which is not a ConfigMap", dir, v.Name)
			}
			key := base
			for _, it := range v.ConfigMap.Items {
				if it.Path == base {
					key = it.Key
				}
			}
			cm := find[*corev1.ConfigMap](t, objs, v.ConfigMap.Name)
			text, ok := cm.Data[key]
			if !ok {
				t.Fatalf("ConfigMap %s has no key %q for %s", cm.Name, key, file)
			}
			return []byte(text)
		}
		t.Fatalf("volume mount %q names no volume", vm.Name)
	}
	t.Fatalf("%s: no volume mounted at %s in container %s", file, dir, c.Name)
	return nil
}

// containerPort resolves a probe's or Service's port (number or name)
// against the container.
func containerPort(t *testing.T, c *corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, p.StrVal)
	return 0
}

func TestLLMuxListensOnEveryInterfaceAtThePortPodServicePoolAndProbesUse(t *testing.T) {
	objs := loadManifests(t)
	p := loadLLMuxPod(t, objs)
	// A loopback listener would be unreachable from the kubelet, the
	// picker and the gateway (and would refuse their Host headers).
	if host := p.setting(t, "host"); host != "0.0.0.0" && host != "::" {
		t.Errorf("llmux host %q: want 0.0.0.0 (or ::)", host)
	}
	port, err := strconv.Atoi(p.setting(t, "port"))
	if err != nil {
		t.Fatal(err)
	}
	if !containerHasPort(p.Container, int32(port)) {
		t.Errorf("container ports %v do not include llmux's port %d", p.Container.Ports, port)
	}
	for name, probe := range map[string]*corev1.Probe{"liveness": p.Container.LivenessProbe, "readiness": p.Container.ReadinessProbe, "startup": p.Container.StartupProbe} {
		if probe == nil {
			if name != "startup" {
				t.Errorf("no %s probe", name)
			}
			continue
		}
		if probe.HTTPGet == nil {
			t.Errorf("%s probe is not an HTTP GET", name)
			continue
		}
		if got := containerPort(t, p.Container, probe.HTTPGet.Port); got != int32(port) {
			t.Errorf("%s probe port %d, llmux listens on %d", name, got, port)
		}
	}
	svc := find[*corev1.Service](t, objs, "llmux")
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(p.Deployment.Spec.Template.Labels)) {
		t.Errorf("Service selector %v does not select the llmux pods %v", svc.Spec.Selector, p.Deployment.Spec.Template.Labels)
	}
	for _, sp := range svc.Spec.Ports {
		if got := containerPort(t, p.Container, sp.TargetPort); got != int32(port) {
			t.Errorf("Service port %s targets %d, llmux listens on %d", sp.Name, got, port)
		}
	}
	pool := find[*infv1.InferencePool](t, objs, "llmux")
	if len(pool.Spec.TargetPorts) != 1 || int(pool.Spec.TargetPorts[0].Number) != port {
		t.Errorf("InferencePool targetPorts %v, llmux listens on %d", pool.Spec.TargetPorts, port)
	}
	pm := find[*monitoringv1.PodMonitor](t, objs, "llmux")
	for _, ep := range pm.Spec.PodMetricsEndpoints {
		if ep.Port == nil {
			t.Errorf("PodMonitor endpoint without a port name")
			continue
		}
		if got := containerPort(t, p.Container, intstr.FromString(*ep.Port)); got != int32(port) {
			t.Errorf("PodMonitor scrapes port %q (%d), llmux listens on %d", *ep.Port, got, port)
		}
		if ep.Path != "/metrics" {
			t.Errorf("PodMonitor path %q, llmux serves /metrics", ep.Path)
		}
	}
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(p.Deployment.Spec.Template.Labels)) {
		t.Errorf("PodMonitor selector %v does not select the llmux pods (%v)", pm.Spec.Selector, err)
	}
}

func containerHasPort(c *corev1.Container, port int32) bool {
	for _, cp := range c.Ports {
		if cp.ContainerPort == port {
			return true
		}
	}
	return false
}

func TestGracePeriodCoversPreStopPauseShutdownTimeoutAndFiveSeconds(t *testing.T) {
	p := loadLLMuxPod(t, loadManifests(t))
	spec := p.Deployment.Spec.Template.Spec
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatal("terminationGracePeriodSeconds unset (default 30 s)")
	}
	grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	var pause time.Duration
	if l := p.Container.Lifecycle; l != nil && l.PreStop != nil {
		switch {
		case l.PreStop.Sleep != nil:
			pause = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
		case l.PreStop.Exec != nil:
			t.Fatalf("preStop exec %q: this test reads only a preStop sleep", l.PreStop.Exec.Command)
		}
	}
	if pause <= 0 {
		t.Errorf("no preStop pause: the pod would stop serving before the picker and gateway drop it")
	}
	shutdown, err := time.ParseDuration(p.setting(t, "shutdown-timeout"))
	if err != nil {
		t.Fatal(err)
	}
	need := pause + shutdown + 5*time.Second
	t.Logf("grace %v; preStop %v + shutdown timeout %v + 5s = %v", grace, pause, shutdown, need)
	if grace < need {
		t.Errorf("terminationGracePeriodSeconds %v < preStop %v + llmux shutdown timeout %v + 5s", grace, pause, shutdown)
	}
}

func TestConfigModelsComeFromTheModelsVolumeTheDownloadJobFills(t *testing.T) {
	objs := loadManifests(t)
	p := loadLLMuxPod(t, objs)
	models, _ := p.Config["models"].([]any)
	if len(models) == 0 {
		t.Fatal("the llmux config lists no models")
	}
	claim := func(spec *corev1.PodSpec, c *corev1.Container, file string) (string, bool) {
		for _, vm := range c.VolumeMounts {
			if !strings.HasPrefix(file, strings.TrimSuffix(vm.MountPath, "/")+"/") {
				continue
			}
			for _, v := range spec.Volumes {
				if v.Name == vm.Name && v.PersistentVolumeClaim != nil {
					return v.PersistentVolumeClaim.ClaimName, vm.ReadOnly
				}
			}
		}
		return "", false
	}
	job := find[*batchv1.Job](t, objs, "llmux-model-download")
	jc := &job.Spec.Template.Spec.Containers[0]
	var downloaded string
	for _, e := range jc.Env {
		if e.Name == "MODEL_FILE" {
			downloaded = e.Value
		}
	}
	jobClaim, _ := claim(&job.Spec.Template.Spec, jc, downloaded)
	var paths []string
	for _, m := range models {
		entry, _ := m.(map[string]any)
		file, _ := entry["path"].(string)
		paths = append(paths, file)
		for _, a := range asList(entry["adapters"]) {
			if ap, _ := a.(map[string]any)["path"].(string); ap != "" {
				paths = append(paths, ap)
			}
		}
	}
	for _, file := range paths {
		name, ro := claim(&p.Deployment.Spec.Template.Spec, p.Container, file)
		if name == "" {
			t.Errorf("model file %s is on no PersistentVolumeClaim mount", file)
			continue
		}
		if !ro {
			t.Errorf("model volume mounted read-write: llmux only reads it")
		}
		find[*corev1.PersistentVolumeClaim](t, objs, name)
		if file == downloaded && jobClaim != name {
			t.Errorf("download Job writes %s to claim %q, llmux reads claim %q", file, jobClaim, name)
		}
	}
	if indexOf(paths, downloaded) < 0 {
		t.Errorf("download Job writes %q, which the llmux config does not serve (%v)", downloaded, paths)
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func TestPodAsksForAGPUAndThreadsFitItsCPURequest(t *testing.T) {
	p := loadLLMuxPod(t, loadManifests(t))
	res := p.Container.Resources
	lim, req := res.Limits[gpuResource], res.Requests[gpuResource]
	if lim.Cmp(resource.MustParse("1")) < 0 {
		t.Errorf("limits[%s] = %v: want at least 1", gpuResource, lim.String())
	}
	// Extended resources cannot be overcommitted: a request must equal
	// the limit.
	if _, ok := res.Requests[gpuResource]; ok && req.Cmp(lim) != 0 {
		t.Errorf("requests[%s] %v != limits %v", gpuResource, req.String(), lim.String())
	}
	cpu, ok := res.Requests[corev1.ResourceCPU]
	if !ok {
		t.Fatal("no CPU request")
	}
	threads, err := strconv.Atoi(p.setting(t, "threads"))
	if err != nil || threads <= 0 {
		// 0 means one thread per CPU of the node, not of the pod.
		t.Fatalf("llmux threads %q: set a positive count", p.setting(t, "threads"))
	}
	if int64(threads) > cpu.Value() {
		t.Errorf("llmux threads %d exceed the pod's CPU request %v", threads, cpu.String())
	}
}

func TestPoolServiceAndHPASelectTheLLMuxPods(t *testing.T) {
	objs := loadManifests(t)
	p := loadLLMuxPod(t, objs)
	podLabels := labels.Set(p.Deployment.Spec.Template.Labels)
	if p.Deployment.Spec.Selector == nil || !labels.SelectorFromSet(p.Deployment.Spec.Selector.MatchLabels).Matches(podLabels) {
		t.Errorf("Deployment selector does not match its pods")
	}
	pool := find[*infv1.InferencePool](t, objs, "llmux")
	sel := labels.Set{}
	for k, v := range pool.Spec.Selector.MatchLabels {
		sel[string(k)] = string(v)
	}
	if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(podLabels) {
		t.Errorf("InferencePool selector %v does not select the llmux pods %v", sel, podLabels)
	}
	if podLabels[engineTypeLabel] == "" {
		t.Errorf("llmux pods lack the %s label", engineTypeLabel)
	}
	hpa := find[*autoscalingv2.HorizontalPodAutoscaler](t, objs, "llmux")
	ref := hpa.Spec.ScaleTargetRef
	if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != p.Deployment.Name {
		t.Errorf("HPA scales %s %s/%s, want the llmux Deployment", ref.APIVersion, ref.Kind, ref.Name)
	}
}

// The live half of the probe rules: the probe paths are llmux routes, the
// pod's config starts llmux, and a Host header from outside the pod (the
// kubelet's, the picker's, the gateway's) is not refused. Liveness and
// startup pass as soon as llmux listens; readiness once its models are
// ready.
func TestProbePathsAnswerOnLLMuxRunningThePodsConfig(t *testing.T) {
	bin := llmuxBin(t)
	objs := loadManifests(t)
	p := loadLLMuxPod(t, objs)
	base, loras := synthModels(t, bin, t.TempDir(), 2048, adapterNames(p.Config)...)
	// The config as the pod has it, models redirected to synthesized
	// files; only the port is overridden (flag beats file), and the
	// engine gets one thread on this shared machine.
	proc := startLLMux(t, bin, withModelPaths(t, p.ConfigText, base, loras), "--threads", "1")
	const podIP = "10.1.2.3:8000" // the Host the kubelet sends
	for name, probe := range map[string]*corev1.Probe{"liveness": p.Container.LivenessProbe, "startup": p.Container.StartupProbe} {
		if probe == nil || probe.HTTPGet == nil {
			continue
		}
		code, body, err := get(proc.URL+probe.HTTPGet.Path, podIP)
		if err != nil || code != http.StatusOK {
			t.Errorf("%s probe GET %s (Host %s): %d %s %v", name, probe.HTTPGet.Path, podIP, code, body, err)
		}
	}
	ready := p.Container.ReadinessProbe.HTTPGet.Path
	t.Log(waitFor(t, 2*time.Minute, "the readiness probe passes", func() (bool, string) {
		code, body, err := get(proc.URL+ready, podIP)
		return err == nil && code == http.StatusOK, fmt.Sprintf("GET %s (Host %s): %d %s %v", ready, podIP, code, body, err)
	}))
	code, _, err := get(proc.URL+"/v1/models", "inference-gateway.llmux.svc.cluster.local")
	if err != nil || code != http.StatusOK {
		t.Errorf("GET /v1/models with the gateway's Host: %d %v", code, err)
	}
}

// llmux's own config checker (`llmux config validate`: keys, values, and
// explicit GPU and memory requests against this machine) accepts the
// pod's config file as it is.
func TestPodsConfigPassesLLMuxConfigValidate(t *testing.T) {
	bin := llmuxBin(t)
	p := loadLLMuxPod(t, loadManifests(t))
	file := filepath.Join(t.TempDir(), path.Base(p.ConfigPath))
	if err := os.WriteFile(file, p.ConfigText, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "config", "validate", file).CombinedOutput()
	if err != nil {
		t.Errorf("llmux config validate: %v\n%s", err, out)
	}
}

// adapterNames lists the adapters of every model in an llmux config.
func adapterNames(cfg map[string]any) []string {
	var names []string
	for _, m := range asList(cfg["models"]) {
		for _, a := range asList(m.(map[string]any)["adapters"]) {
			if n, _ := a.(map[string]any)["name"].(string); n != "" {
				names = append(names, n)
			}
		}
	}
	return names
}

// After SIGTERM (which comes after the preStop pause) llmux drains: the
// readiness probe must fail, so that nothing new is sent to the pod, the
// liveness probe must keep passing, so that the kubelet does not restart
// the container, and the streams already running must go on.
func TestReadinessFailsLivenessHoldsAndStreamsGoOnWhileLLMuxDrains(t *testing.T) {
	bin := llmuxBin(t)
	objs := loadManifests(t)
	p := loadLLMuxPod(t, objs)
	base, loras := synthModels(t, bin, t.TempDir(), 8192, adapterNames(p.Config)...)
	proc := startLLMux(t, bin, withModelPaths(t, p.ConfigText, base, loras), "--threads", "1")
	gen := startGeneration(t, proc, firstModelName(t, p.Config), 30000)
	if !gen.waitFirstToken(t, time.Minute) {
		t.Fatal("no token within a minute")
	}
	if err := proc.cmd.Process.Signal(sigterm); err != nil {
		t.Fatal(err)
	}
	ready, live := p.Container.ReadinessProbe.HTTPGet.Path, p.Container.LivenessProbe.HTTPGet.Path
	// A refused connection fails a probe as a 503 does.
	t.Log(waitFor(t, 30*time.Second, "readiness probe fails after SIGTERM", func() (bool, string) {
		code, body, err := get(proc.URL+ready, "")
		return err != nil || code < 200 || code >= 400, fmt.Sprintf("GET %s: %d %s %v", ready, code, body, err)
	}))
	if code, body, err := get(proc.URL+live, ""); err != nil || code != http.StatusOK {
		t.Errorf("liveness probe GET %s while draining: %d %s %v", live, code, body, err)
	}
	before := gen.tokens.Load()
	waitFor(t, 30*time.Second, "the running stream keeps streaming while llmux drains", func() (bool, string) {
		n := gen.tokens.Load()
		return n > before+10, fmt.Sprintf("%d tokens, %d at the probe failure; stream open: %v", n, before, gen.running())
	})
	gen.stop()
	select {
	case <-proc.done:
	case <-time.After(30 * time.Second):
		t.Errorf("llmux still running 30 s after its last stream ended")
	}
}

func firstModelName(t *testing.T, cfg map[string]any) string {
	t.Helper()
	for _, m := range asList(cfg["models"]) {
		if n, _ := m.(map[string]any)["name"].(string); n != "" {
			return n
		}
	}
	t.Fatal("the llmux config names no model")
	return ""
}
