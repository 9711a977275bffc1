package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/llmux/llmux/app"
	"github.com/llmux/llmux/autoscale"
	"github.com/llmux/llmux/gpu"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/models"
	"github.com/llmux/llmux/multiplex"
	"github.com/llmux/llmux/openai"
	"github.com/llmux/llmux/replica"
	"github.com/llmux/llmux/scheduler"
	"github.com/llmux/llmux/server"
)

// serveFlags are llmux serve's settings. Each can also come from the YAML
// file given by --config (key = flag name, '-' or '_') or from the
// environment (LLMUX_ + the flag name in upper case with '_' for '-').
// Precedence: flag > environment > config file > default. The file also
// holds the models: and applications: lists (package config).
type serveFlags struct {
	fs              *flag.FlagSet
	config          *string
	model           *listFlag
	modelName       *string
	modelsDir       *listFlag
	loraDir         *listFlag
	lora            *loraFlag
	ollamaModels    *string
	maxModels       *int
	memoryBudget    *string
	swapPolicy      *string
	minResidency    *time.Duration
	maxSwapWait     *time.Duration
	keepAlive       *time.Duration
	replicas        *int
	maxOngoing      *int
	replicaMemory   *string
	minReplicas     *int
	maxReplicas     *int
	initialReplicas *int
	targetOngoing   *float64
	upscaleDelay    *time.Duration
	downscaleDelay  *time.Duration
	upscalingFactor *float64
	downscaleFactor *float64
	lookBack        *time.Duration
	// given names the settings given by flag, environment or file.
	given           map[string]bool
	models          []multiplex.ModelConfig
	host            *string
	port            *int
	parallel        *int
	ctxSize         *int
	batch           *int
	chunk           *int
	cacheSlots      *int
	noPrefixCache   *bool
	threads         *int
	kvLayout        *string
	handoff         *time.Duration
	flashAttn       *string
	kvType          *string
	chatTemplate    *string
	gpuLayers       *string
	gpus            *float64
	tensorSplit     *string
	maxQueue        *int
	queueTimeout    *time.Duration
	shutdownTimeout *time.Duration
	apiKeys         *string
	adminKeys       *string
	metricsAuth     *bool
	allowedHosts    *string
	requestTimeout  *time.Duration
	cors            *string
	maxBody         *int64
	maxTokens       *int
	maxN            *int
	logLevel        *string
	logFormat       *string

	// file is the config file as read at start (nil without one); its
	// Applications are the applications: list, resolved.
	file *configFile
	// shadowed are the file's keys that flags or the environment override.
	shadowed []shadowedKey
}

func newServeFlags() *serveFlags {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	f := &serveFlags{fs: fs}
	f.config = fs.String("config", "", "YAML config file: keys are flag names, plus models: and applications: (check it with llmux config validate)")
	fs.StringVar(f.config, "f", "", "short for --config")
	f.model = &listFlag{}
	fs.Var(f.model, "model", "[NAME=]PATH: a GGUF model file, synth:PRESET, or an ollama model name[:tag]; repeatable (default: the embedded synthesized model)")
	f.lora = &loraFlag{}
	fs.Var(f.lora, "lora", "name=N,base=B,path=P[,scale=S]: a LoRA adapter of the configured model B, served as N and B:N; repeatable")
	f.modelName = fs.String("model-name", "", "model id clients send, when one --model is given (default: the file name without .gguf)")
	f.loraDir = &listFlag{}
	fs.Var(f.loraDir, "lora-dir", "directory from which POST /v1/load_lora_adapter may register adapters (admin key required); repeatable")
	f.modelsDir = &listFlag{}
	fs.Var(f.modelsDir, "models-dir", "serve every .gguf file in this directory under its file name; repeatable")
	f.ollamaModels = fs.String("ollama-models", "", "ollama's model store, whose models are served by their ollama names (default: $OLLAMA_MODELS or ~/.ollama/models, when it exists)")
	f.maxModels = fs.Int("max-models", 0, "most base models loaded at once (0: no bound)")
	f.memoryBudget = fs.String("memory-budget", "", "most memory the loaded models may hold, from their metadata: weights + KV cache (e.g. 12GiB; empty: no bound)")
	f.swapPolicy = fs.String("swap-policy", string(multiplex.SwapAware), "how loaded models make room: swap-aware (group bursts, minimum residency, bounded waits) or lru")
	f.minResidency = fs.Duration("min-residency", multiplex.DefaultMinResidency, "swap-aware: an idle model is kept for its next request at most this long (its load time, capped by this) while another model waits for its place and requests run on other models")
	f.maxSwapWait = fs.Duration("max-swap-wait", multiplex.DefaultMaxSwapWait, "requests for a model that does not fit wait at most this long before a busy model is drained to make room")
	f.keepAlive = fs.Duration("keep-alive", 0, "unload a model idle this long (0: never)")
	f.replicas = fs.Int("replicas", 1, "replica processes serving the models (0: serve them in this process)")
	f.replicaMemory = fs.String("replica-memory-limit", "", "cap on each replica process's address space (RLIMIT_AS; e.g. 16GiB; empty: none): past it a model that does not fit fails to load, and a replica that runs out exits and is restarted, costing only its own streams")
	f.maxOngoing = fs.Int("max-ongoing-requests", 0, "requests in flight on one replica before the router sends the next elsewhere or queues it (0: no bound)")
	f.maxReplicas = fs.Int("max-replicas", 0, "autoscaling: most replica processes (0: autoscaling off, --replicas processes run)")
	f.minReplicas = fs.Int("min-replicas", 1, "autoscaling: fewest replica processes (0: scale to zero when idle; a request starts one)")
	f.initialReplicas = fs.Int("initial-replicas", -1, "autoscaling: replica processes at start (-1: --min-replicas)")
	f.targetOngoing = fs.Float64("target-ongoing-requests", autoscale.DefaultTargetOngoingRequests, "autoscaling: requests in flight (running or queued) each replica should carry")
	f.upscaleDelay = fs.Duration("upscale-delay", autoscale.DefaultUpscaleDelay, "autoscaling: how long the load must ask for more replicas before they start")
	f.downscaleDelay = fs.Duration("downscale-delay", autoscale.DefaultDownscaleDelay, "autoscaling: how long the load must ask for fewer replicas before some drain and stop")
	f.upscalingFactor = fs.Float64("upscaling-factor", 1, "autoscaling: share of the way to what the load asks for that one upscale goes (1: all of it)")
	f.downscaleFactor = fs.Float64("downscaling-factor", 1, "autoscaling: share of the way to what the load asks for that one downscale goes (1: all of it)")
	f.lookBack = fs.Duration("look-back-period", autoscale.DefaultLookBackPeriod, "autoscaling: window over which the load is averaged")
	f.host = fs.String("host", "127.0.0.1", "address to listen on")
	f.port = fs.Int("port", 8080, "port to listen on (0: any free port)")
	f.parallel = fs.Int("parallel", 4, "sequences decoded at once")
	f.ctxSize = fs.Int("ctx-size", 0, "KV cache size in tokens, shared by all sequences (0: the model's context, at most 8192)")
	f.batch = fs.Int("batch", 128, "most tokens evaluated per engine step (bounds how long new requests wait behind long prompts)")
	f.chunk = fs.Int("chunk", 64, "most prompt tokens one sequence gets per step (chunked prefill)")
	f.cacheSlots = fs.Int("cache-slots", 0, "extra slots keeping finished prompts for prefix reuse (0: same as --parallel, -1: none)")
	f.noPrefixCache = fs.Bool("no-prefix-cache", false, "disable prefix reuse")
	f.threads = fs.Int("threads", 0, "CPU threads for the engine (0: all)")
	f.kvLayout = fs.String("kv-layout", "unified", "KV cache layout: unified (one pool; prefixes shared across sequences; one sequence may use all of --ctx-size) or per-slot (a stream of ctx-size/parallel cells per sequence; faster with many sequences)")
	f.handoff = fs.Duration("handoff", time.Millisecond, "after each engine step, how long to wait for the HTTP side to take the step's tokens before the next step (negative: never)")
	f.flashAttn = fs.String("flash-attn", "auto", "flash attention: auto, on, off")
	f.kvType = fs.String("kv-type", "f16", "KV cache type: f16, q8_0, q4_0")
	f.chatTemplate = fs.String("chat-template", "", "chat template of models whose config sets no chat_template: \"\" (choose: ollama store layers, family renderer, the GGUF's template matched to ollama's, llama.cpp's heuristics), gguf (the GGUF's own, even for ollama store models), llama.cpp, or a family renderer's name")
	f.gpuLayers = fs.String("gpu-layers", "auto", "layers to offload to GPUs: auto (as many as fit, the rest on CPU; none without a GPU backend), -1 (all) or a count")
	f.gpus = fs.Float64("gpus", 1, "GPUs per replica, as Ray Serve's num_gpus: 1 a whole GPU (spanned over more when the model needs them), 0.5 half of one (two replicas share it), N at least N")
	f.tensorSplit = fs.String("tensor-split", "", "comma-separated share of the model per visible GPU (set per replica by placement)")
	f.maxQueue = fs.Int("max-queue", 256, "requests waiting for admission before 429")
	f.queueTimeout = fs.Duration("queue-timeout", time.Minute, "default deadline for a first token (429 when predicted to miss it)")
	f.shutdownTimeout = fs.Duration("shutdown-timeout", 30*time.Second, "time running streams get to finish on SIGTERM")
	f.apiKeys = fs.String("api-key", "", "comma-separated API keys required as 'Authorization: Bearer KEY' (empty: no auth)")
	f.adminKeys = fs.String("admin-key", "", "comma-separated keys required as 'Authorization: Bearer KEY' on admin routes (/admin/...; empty: admin routes off)")
	f.metricsAuth = fs.Bool("metrics-auth", false, "require an API or admin key on /metrics too")
	f.allowedHosts = fs.String("allowed-hosts", "", "comma-separated Host names accepted besides localhost and loopback addresses when listening on a loopback address ('*' for any)")
	f.requestTimeout = fs.Duration("request-timeout", 30*time.Minute, "longest a request may run, streams included (0: no bound)")
	f.cors = fs.String("cors-origins", "", "comma-separated origins allowed by CORS ('*' for any; empty: CORS off)")
	f.maxBody = fs.Int64("max-body-bytes", 8<<20, "largest request body")
	f.maxTokens = fs.Int("max-tokens-limit", 32768, "largest max_tokens a request may ask for, and what a request without max_tokens gets (less when the context fills first)")
	f.maxN = fs.Int("max-n", 8, "largest n a request may ask for (also bounded by --parallel)")
	f.logLevel = fs.String("log-level", "info", "debug, info, warn or error")
	f.logFormat = fs.String("log-format", "text", "text or json")
	return f
}

// parse applies flags, then environment and config values for flags not
// given on the command line.
func (f *serveFlags) parse(args []string) (err error) {
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	if f.fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", f.fs.Arg(0))
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	f.given = map[string]bool{}
	if !set["config"] && !set["f"] {
		if v, ok := os.LookupEnv("LLMUX_CONFIG"); ok {
			*f.config = v
		}
	}
	var file *configFile
	if *f.config != "" {
		if file, err = readConfig(*f.config, defaultRegistry(), false); err != nil {
			return err
		}
		f.file, f.models = file, file.Models
	}
	f.fs.VisitAll(func(fl *flag.Flag) {
		if err != nil || fl.Name == "config" || fl.Name == "f" {
			return
		}
		env := "LLMUX_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		envVal, inEnv := os.LookupEnv(env)
		fileVal, inFile := "", false
		if file != nil {
			fileVal, inFile = file.Flat[fl.Name]
		}
		f.given[fl.Name] = set[fl.Name] || inEnv || inFile
		switch {
		case set[fl.Name]:
			if inFile {
				f.shadowed = append(f.shadowed, shadowedKey{key: file.Keys[fl.Name], source: "flag --" + fl.Name})
			}
		case inEnv:
			if e := fl.Value.Set(envVal); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, envVal, e)
			}
			if inFile {
				f.shadowed = append(f.shadowed, shadowedKey{key: file.Keys[fl.Name], source: "env " + env})
			}
		case inFile:
			if e := fl.Value.Set(fileVal); e != nil {
				err = fmt.Errorf("config %s: %s: %w", *f.config, fl.Name, e)
			}
		}
	})
	return err
}

// autoscaling is the LLM deployment's autoscaling configuration, nil
// when --max-replicas is 0 (a fixed --replicas).
func (f *serveFlags) autoscaling() (*autoscale.Config, error) {
	if *f.maxReplicas == 0 {
		for _, name := range []string{"min-replicas", "initial-replicas", "target-ongoing-requests", "upscale-delay", "downscale-delay", "upscaling-factor", "downscaling-factor", "look-back-period"} {
			if f.given[name] {
				return nil, fmt.Errorf("--%s is an autoscaling setting: autoscaling is on only with --max-replicas", name)
			}
		}
		return nil, nil
	}
	if f.given["replicas"] {
		return nil, fmt.Errorf("--replicas and --max-replicas exclude each other: with autoscaling, --initial-replicas sets the replicas at start")
	}
	c := autoscale.DefaultConfig()
	c.MinReplicas, c.MaxReplicas = *f.minReplicas, *f.maxReplicas
	if *f.initialReplicas >= 0 {
		n := *f.initialReplicas
		c.InitialReplicas = &n
	}
	c.TargetOngoingRequests = *f.targetOngoing
	c.UpscaleDelay, c.DownscaleDelay = *f.upscaleDelay, *f.downscaleDelay
	c.UpscalingFactor, c.DownscalingFactor = *f.upscalingFactor, *f.downscaleFactor
	c.LookBackPeriod = *f.lookBack
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// replicaThreads is each replica's engine threads: its share of --threads
// (default: every CPU), at least one.
func (f *serveFlags) replicaThreads() int {
	threads := *f.threads
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	return max(threads/f.replicaCount(), 1)
}

// replicaEnv is a replica process's environment: the serving process's,
// with GOMAXPROCS=1 unless it sets one, and the runtime's monitor thread
// kept out of deep sleep (replicaGodebug) unless GODEBUG names schedtrace.
// A replica's Go code (its scheduler loop and the socket it answers on)
// needs one P, and its engine threads are llama.cpp's, outside the Go
// runtime's count; with more, the runtime's idle threads spin for work on
// the cores where llama.cpp computes, and a compute thread that loses its
// core stalls its partner at the next barrier (benchmarks/README.md, night
// sitting). The serving process keeps Go's default: with one P it served
// 16 streams slower.
func replicaEnv(environ []string) []string {
	out := slices.Clone(environ)
	procs, debug := false, -1
	for i, kv := range out {
		switch {
		case strings.HasPrefix(kv, "GOMAXPROCS="):
			procs = true
		case strings.HasPrefix(kv, "GODEBUG="):
			debug = i
		}
	}
	if !procs {
		out = append(out, "GOMAXPROCS=1")
	}
	switch {
	case debug < 0:
		out = append(out, "GODEBUG="+replicaGodebug)
	case out[debug] == "GODEBUG=":
		out[debug] += replicaGodebug
	case !strings.Contains(out[debug], "schedtrace="):
		out[debug] += "," + replicaGodebug
	}
	return out
}

// replicaGodebug keeps a replica's runtime monitor thread (sysmon) from
// deep sleep. Between engine steps a replica's only P is idle, so sysmon
// sleeps deeply, and the first system call of every step's token (the
// socket write) wakes it into polling every 20µs for a millisecond: some
// 50 wake-ups a token, each taking a core from llama.cpp's compute
// threads. A schedtrace period keeps it out of deep sleep; with nothing to
// retake it then backs off to one wake-up every 10ms. The period (2^31-1
// ms, about 24.8 days of the machine's uptime) is long enough that the
// trace line it exists for is printed at most once a replica start on a
// machine up longer than that (the replica's log relay files it at debug
// level), and otherwise never.
const replicaGodebug = "schedtrace=2147483647"

// replicaCount is how many replica processes may run at once: --replicas,
// or --max-replicas with autoscaling (placement and the thread shares are
// sized for it).
func (f *serveFlags) replicaCount() int {
	if *f.maxReplicas > 0 {
		return *f.maxReplicas
	}
	return *f.replicas
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// backend is what serve serves from: a pool in this process, or a set of
// replica processes; either runs until its context ends.
type backend interface {
	llm.Backend
	Run(ctx context.Context) error
}

// setup parses serve's flags and the settings serve and replica share:
// the logger (also made the default), --gpu-layers and --tensor-split.
func setup(args []string) (f *serveFlags, logger *slog.Logger, gpuLayers int, split []float32, err error) {
	f = newServeFlags()
	if err = f.parse(args); err != nil {
		return
	}
	if logger, err = newLogger(*f.logLevel, *f.logFormat); err != nil {
		return
	}
	slog.SetDefault(logger)
	if gpuLayers, err = parseGPULayers(*f.gpuLayers); err != nil {
		return
	}
	split, err = parseTensorSplit(*f.tensorSplit)
	return
}

func runServe(ctx context.Context, args []string) error {
	f, logger, layers, split, err := setup(args)
	if err != nil {
		return err
	}
	f.logShadowed(logger)
	gpus, node, gpuBackend := startGPUs(logger, layers)
	defer gpus.Close()
	if !gpuBackend {
		node = gpu.Node{} // no GPU backend: nothing can run on the GPUs
	}
	scaling, err := f.autoscaling()
	if err != nil {
		return err
	}
	// The catalog is built here even when replicas serve it, so that
	// configuration mistakes stop the server at start.
	pool, catalog, loader, err := f.pool(logger, layers, split)
	if err != nil {
		return err
	}
	largest := largestModel(catalog, func(e multiplex.Entry) (int64, int, error) {
		b, _, err := loader.Size(e)
		if err != nil {
			return 0, 0, err
		}
		info, err := models.Inspect(e.Path)
		if err != nil {
			return 0, 0, err
		}
		return b, int(info.Layers), nil
	})
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gpuMetrics := gpu.NewCollector(gpus)
	if gpus.Available() {
		registry.MustRegister(gpuMetrics)
	}
	var be backend = pool
	deployments := func() []deploymentStatus {
		l := pool.Load()
		return []deploymentStatus{{Name: "llm", Kind: "llm", Replicas: []replica.ReplicaStatus{{Name: "in-process", PID: os.Getpid(), State: "ready", Ongoing: l.Running + l.Waiting, Models: []string{}}}}}
	}
	if f.replicaCount() == 0 && *f.replicaMemory != "" {
		return fmt.Errorf("--replica-memory-limit caps replica processes, and --replicas 0 runs none: drop one of them")
	}
	if n := f.replicaCount(); n > 0 {
		placed, plan, err := placeReplicas(node, n, largest, *f.gpus, layers)
		if err != nil {
			return err
		}
		gpuMetrics.SetPlan(plan)
		offload := make([]string, len(placed))
		for i, p := range placed {
			offload[i] = p.Desc
			logger.Info("replica placement", "replica", fmt.Sprintf("replica-%d", i), "gpus", p.Env[0], "offload", p.Desc)
		}
		set, dir, err := f.replicaSet(args, logger, placed, scaling, pool)
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		be = set
		deployments = func() []deploymentStatus {
			return []deploymentStatus{{Name: "llm", Kind: "llm", Replicas: set.Status(), Offload: offload, Autoscaling: set.Autoscaling()}}
		}
	} else if layers == gpuLayersAuto && len(node.Devices) > 0 {
		placed, plan, err := placeReplicas(node, 1, largest, *f.gpus, layers)
		if err != nil {
			return err
		}
		gpuMetrics.SetPlan(plan)
		logger.Info("placement", "gpus", placed[0].Env[0], "offload", placed[0].Desc)
		loader.GPULayers, loader.TensorSplit = placed[0].GPULayers, placed[0].TensorSplit
	}
	registry.MustRegister(deploymentCollector{status: func() []deploymentStatus { return deployments() }})
	limits := openai.DefaultLimits()
	limits.MaxTokens, limits.MaxN = *f.maxTokens, *f.maxN
	opts := server.Options{
		APIKeys: splitComma(*f.apiKeys), AdminKeys: splitComma(*f.adminKeys), MetricsAuth: *f.metricsAuth,
		AllowedHosts: splitComma(*f.allowedHosts), RequestTimeout: *f.requestTimeout, CORSOrigins: splitComma(*f.cors), Deployments: func() any { return deployments() },
		MaxBodyBytes: *f.maxBody, Limits: &limits, ShutdownTimeout: *f.shutdownTimeout, Version: version, Logger: logger,
		Registry: registry,
	}
	var specs []app.Spec
	if f.file != nil {
		specs = f.file.Applications
	}
	apps, mounted, err := buildApplications(specs, catalog, be, opts, nil)
	if err != nil {
		return err
	}
	opts.Applications = mounted
	var appsMu sync.Mutex // guards stopApps and apps: a reload replaces them
	stopApps := runApplications(ctx, apps)
	defer func() { appsMu.Lock(); stopApps(); appsMu.Unlock() }()
	srv := server.New(be, opts)
	ln, err := net.Listen("tcp", net.JoinHostPort(*f.host, strconv.Itoa(*f.port)))
	if err != nil {
		return err
	}
	var names []string
	for _, e := range catalog.Entries() {
		names = append(names, e.Name)
	}
	replicas := any(*f.replicas)
	if scaling != nil {
		replicas = fmt.Sprintf("%d..%d (autoscaling)", scaling.MinReplicas, scaling.MaxReplicas)
	}
	logger.Info("llmux serving", "url", "http://"+ln.Addr().String()+"/v1", "models", strings.Join(names, ","), "replicas", replicas,
		"max_models", *f.maxModels, "swap_policy", *f.swapPolicy, "version", version, "cpu", cpuTarget)
	// The backend outlives the HTTP server so draining streams finish; it
	// stops (unloading every model, stopping every replica) once the
	// server has.
	beCtx, stopBackend := context.WithCancel(context.Background())
	// SIGHUP re-reads the config file and rebuilds its applications over
	// the same models: requests in an old application finish there.
	reloadCtx, stopReload := context.WithCancel(ctx)
	defer stopReload()
	reload := watchConfig(reloadCtx, f, logger, func(_, specs []app.Spec) error {
		appsMu.Lock()
		defer appsMu.Unlock()
		prev := map[string]*app.App{}
		for _, a := range apps {
			prev[a.Spec.Name] = a
		}
		next, mounted, err := buildApplications(specs, catalog, be, opts, prev)
		if err != nil {
			return err
		}
		srv.SetApplications(mounted)
		stopApps() // the old applications' autoscalers; their replicas finish what they hold
		apps, stopApps = next, runApplications(ctx, next)
		logger.Info("config reload: applications applied", "applications", len(mounted))
		return nil
	})
	srv.SetApply(func(data []byte) (any, error) { return reload.apply("POST /-/apply", data) })
	var g errgroup.Group
	g.Go(func() error { return be.Run(beCtx) })
	g.Go(func() error {
		defer stopBackend()
		return srv.Serve(ctx, ln)
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	logger.Info("llmux stopped")
	return err
}

// deploymentStatus is one deployment in GET /-/status.
type deploymentStatus struct {
	Name     string                  `json:"name"`
	Kind     string                  `json:"kind"`
	Replicas []replica.ReplicaStatus `json:"replicas"`
	// Offload says, per replica, where its model runs ("all layers on 1
	// GPU(s)", "CPU only (no GPU)", ...).
	Offload []string `json:"offload,omitempty"`
	// Autoscaling is the autoscaler's target and the load it decided on,
	// when the deployment autoscales.
	Autoscaling *autoscale.Status `json:"autoscaling,omitempty"`
}

// pool builds the catalog and the pool that serves it in this process,
// with gpuLayers (auto counts as none: the serving process resolves auto
// before a replica starts) and split.
func (f *serveFlags) pool(logger *slog.Logger, gpuLayers int, split []float32) (*multiplex.Pool, *multiplex.Catalog, *multiplex.EngineLoader, error) {
	catalog, err := f.catalog(logger)
	if err != nil {
		return nil, nil, nil, err
	}
	budget, err := parseBytes(*f.memoryBudget)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--memory-budget: %w", err)
	}
	policy, err := multiplex.ParseSwapPolicy(*f.swapPolicy)
	if err != nil {
		return nil, nil, nil, err
	}
	if gpuLayers == gpuLayersAuto {
		gpuLayers = 0
	}
	loader := &multiplex.EngineLoader{GPULayers: gpuLayers, TensorSplit: split, Logger: logger, Catalog: catalog, ChatTemplate: *f.chatTemplate, Defaults: scheduler.Options{
		Parallel: *f.parallel, Cells: *f.ctxSize, KVLayout: *f.kvLayout,
		CacheSlots: *f.cacheSlots, TokenBudget: *f.batch, Chunk: *f.chunk, MaxQueue: *f.maxQueue, QueueTimeout: *f.queueTimeout,
		NoPrefixCache: *f.noPrefixCache, Threads: *f.threads, Handoff: *f.handoff, FlashAttention: *f.flashAttn, KVType: *f.kvType,
		Steps: scheduler.NewStepGate(), // the loaded models take turns at engine steps
	}}
	return multiplex.NewPool(multiplex.PoolOptions{
		Catalog: catalog, Load: loader.Load, Size: loader.Size,
		MaxModels: *f.maxModels, MemoryBudget: budget, Policy: policy, MinResidency: *f.minResidency, MaxSwapWait: *f.maxSwapWait,
		KeepAlive: *f.keepAlive, QueueTimeout: *f.queueTimeout, Logger: logger,
	}), catalog, loader, nil
}

// replicaSet describes the replica processes: this binary run as `llmux
// replica` with the same serve arguments, each with its share of the
// threads (of the most replicas that may run at once). With autoscaling,
// the local pool (not running) describes models while no replica is
// ready, so that a request waits for a replica to start in Generate.
func (f *serveFlags) replicaSet(args []string, logger *slog.Logger, placed []replicaGPUs, scaling *autoscale.Config, describe replica.Describer) (set *replica.Set, socketDir string, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", fmt.Errorf("replicas: %w", err)
	}
	threads := f.replicaThreads()
	memLimit, err := parseBytes(*f.replicaMemory)
	if err != nil {
		return nil, "", fmt.Errorf("--replica-memory-limit: %w", err)
	}
	dir, err := os.MkdirTemp("", "llmux-replicas-")
	if err != nil {
		return nil, "", fmt.Errorf("replicas: %w", err)
	}
	command := append([]string{exe, "replica"}, args...)
	// Later flags win: each replica gets its share of the threads, and
	// logs in JSON so that the serving process can relay its records.
	command = append(command, "--threads", strconv.Itoa(threads), "--log-format", "json")
	o := replica.SetOptions{Replicas: *f.replicas, MaxOngoing: *f.maxOngoing, Logger: logger,
		Process: replica.ProcessOptions{Name: "replica", Command: command, Env: replicaEnv(os.Environ()), SocketDir: dir, MemoryLimit: uint64(memLimit)},
		// Each replica gets its GPUs: later flags and environment win. A
		// replica index reaches past the placed ones only while replicas
		// being stopped still hold theirs (autoscaling).
		Customize: func(i int, po *replica.ProcessOptions) {
			p := placed[i%len(placed)]
			po.Command = append(po.Command, p.Args()...)
			po.Env = append(po.Env, p.Env...)
		}}
	if scaling != nil {
		o.Autoscale, o.Describe = scaling, describe
	}
	return replica.NewSet(o), dir, nil
}

// runReplica is `llmux replica`: the serve arguments plus --socket PATH;
// it serves its models on the socket until the serving process is gone.
func runReplica(ctx context.Context, args []string) error {
	var sock string
	rest := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		if args[i] == "--socket" && i+1 < len(args) {
			sock = args[i+1]
			i++
			continue
		}
		rest = append(rest, args[i])
	}
	if sock == "" {
		return fmt.Errorf("replica: --socket PATH is required (llmux serve starts replicas itself)")
	}
	f, logger, layers, split, err := setup(rest)
	if err != nil {
		return err
	}
	pool, _, _, err := f.pool(logger, layers, split)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- pool.Run(ctx) }()
	err = replica.ServeProcess(ctx, sock, pool)
	cancel()
	if perr := <-done; err == nil {
		err = perr
	}
	return err
}
