package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestServeConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "llmux.yaml")
	os.WriteFile(cfg, []byte("parallel: 6\nport: 9000\nctx_size: 1024\napi_key: [a, b]\nqueue-timeout: 5s\n"), 0o644)
	t.Setenv("LLMUX_PORT", "9100")     // env beats the file
	t.Setenv("LLMUX_THREADS", "3")     // env alone
	t.Setenv("LLMUX_PARALLEL", "oops") // ignored: the flag is given
	f := newServeFlags()
	if err := f.parse([]string{"--config", cfg, "--parallel", "2"}); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"parallel (flag)", *f.parallel, 2},
		{"port (env over file)", *f.port, 9100},
		{"threads (env)", *f.threads, 3},
		{"ctx-size (file, underscore key)", *f.ctxSize, 1024},
		{"api-key (file list)", *f.apiKeys, "a,b"},
		{"queue-timeout (file, dash key)", *f.queueTimeout, 5 * time.Second},
		{"batch (default)", *f.batch, 128},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	// The file's port and parallel do not apply: said once, at start.
	var logs bytes.Buffer
	f.logShadowed(slog.New(slog.NewTextHandler(&logs, nil)))
	for _, want := range []string{
		`msg="config key shadowed by flag" key=parallel source="flag --parallel"`,
		`msg="config key shadowed by flag" key=port source="env LLMUX_PORT"`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
	if n := strings.Count(logs.String(), "\n"); n != 2 {
		t.Errorf("%d shadowed keys logged, want 2:\n%s", n, logs.String())
	}
}

// TestServeConfigApplications reads applications: with -f, beside the
// flat keys; LLMUX_CONFIG names the file too.
func TestServeConfigApplications(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "llmux.yaml")
	os.WriteFile(cfg, []byte("parallel: 6\napplications:\n  - name: chat\n    route_prefix: chat/\n    deployments:\n      - {name: llm, kind: llm, models: [tiny]}\n"), 0o644)
	for _, args := range [][]string{{"-f", cfg}, {"--config", cfg}, nil} {
		if args == nil {
			t.Setenv("LLMUX_CONFIG", cfg)
		}
		f := newServeFlags()
		if err := f.parse(args); err != nil {
			t.Fatal(err)
		}
		if *f.parallel != 6 || f.file == nil || len(f.file.Applications) != 1 {
			t.Fatalf("%v: parallel %d, file %+v", args, *f.parallel, f.file)
		}
		if a := f.file.Applications[0]; a.RoutePrefix != "/chat" || a.Ingress != "llm" || a.Deployments[0].Replicas != 1 {
			t.Errorf("%v: application not resolved: %+v", args, a)
		}
	}
}

func TestServeConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("no_such_flag: 1\n"), 0o644)
	if err := newServeFlags().parse([]string{"--config", bad}); err == nil {
		t.Error("unknown config key accepted")
	}
	os.WriteFile(bad, []byte("port: [not, a, number]\n"), 0o644)
	if err := newServeFlags().parse([]string{"--config", bad}); err == nil {
		t.Error("bad config value accepted")
	}
	t.Setenv("LLMUX_PORT", "eighty")
	if err := newServeFlags().parse(nil); err == nil {
		t.Error("bad environment value accepted")
	}
	if err := newServeFlags().parse([]string{"--config", filepath.Join(dir, "missing.yaml")}); err == nil {
		t.Error("missing config file accepted")
	}
	// Every mistake stops serve at start, each with its line.
	os.WriteFile(bad, []byte("prot: 1\napplications:\n  - name: a\n    deployments: [{name: r, kind: nope}]\n"), 0o644)
	err := newServeFlags().parse([]string{"-f", bad})
	if err == nil || !strings.Contains(err.Error(), bad+":1:1: prot: unknown key") || !strings.Contains(err.Error(), bad+":4:") {
		t.Errorf("got %v, want both problems with their lines", err)
	}
}

func TestServeAutoscalingSettings(t *testing.T) {
	off := newServeFlags()
	if err := off.parse([]string{"--replicas", "3"}); err != nil {
		t.Fatal(err)
	}
	if c, err := off.autoscaling(); c != nil || err != nil || off.replicaCount() != 3 {
		t.Fatalf("without --max-replicas: %+v %v, %d replicas", c, err, off.replicaCount())
	}

	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--max-replicas", "2", "--replicas", "2"}, "exclude each other"},
		{[]string{"--max-replicas", "2", "--min-replicas", "3"}, "min_replicas (3) is more than max_replicas (2)"},
		{[]string{"--max-replicas", "2", "--target-ongoing-requests", "0"}, "target_ongoing_requests is 0"},
		{[]string{"--min-replicas", "0"}, "autoscaling is on only with --max-replicas"},
	}
	for _, b := range bad {
		f := newServeFlags()
		if err := f.parse(b.args); err != nil {
			t.Fatal(err)
		}
		if _, err := f.autoscaling(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%v: got %v, want an error containing %q", b.args, err, b.want)
		}
	}

	dir := t.TempDir()
	cfg := filepath.Join(dir, "llmux.yaml")
	os.WriteFile(cfg, []byte("max_replicas: 4\nmin-replicas: 0\ntarget_ongoing_requests: 1.5\nupscale_delay: 2s\n"), 0o644)
	t.Setenv("LLMUX_DOWNSCALE_DELAY", "1m")
	f := newServeFlags()
	if err := f.parse([]string{"--config", cfg, "--initial-replicas", "2"}); err != nil {
		t.Fatal(err)
	}
	c, err := f.autoscaling()
	if err != nil {
		t.Fatal(err)
	}
	if c == nil || c.MinReplicas != 0 || c.MaxReplicas != 4 || c.Initial() != 2 || c.TargetOngoingRequests != 1.5 ||
		c.UpscaleDelay != 2*time.Second || c.DownscaleDelay != time.Minute || c.LookBackPeriod != 30*time.Second || f.replicaCount() != 4 {
		t.Fatalf("autoscaling config %+v (replica count %d)", c, f.replicaCount())
	}

}

// TestReplicaEnvironment: a replica's environment is the serving
// process's with GOMAXPROCS=1 and the sysmon setting added; a GOMAXPROCS
// the serving process names is inherited unchanged, and so is a GODEBUG
// that names schedtrace, while any other GODEBUG gains the setting.
func TestReplicaEnvironment(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env, out []string
	}{
		{"Neither", []string{"PATH=/bin", "HOME=/root"}, []string{"PATH=/bin", "HOME=/root", "GOMAXPROCS=1", "GODEBUG=" + replicaGodebug}},
		{"GOMAXPROCSSet", []string{"GOMAXPROCS=4", "PATH=/bin"}, []string{"GOMAXPROCS=4", "PATH=/bin", "GODEBUG=" + replicaGodebug}},
		{"OtherGODEBUG", []string{"GODEBUG=madvdontneed=1", "GOMAXPROCS=2"}, []string{"GODEBUG=madvdontneed=1," + replicaGodebug, "GOMAXPROCS=2"}},
		{"EmptyGODEBUG", []string{"GODEBUG="}, []string{"GODEBUG=" + replicaGodebug, "GOMAXPROCS=1"}},
		{"SchedtraceSet", []string{"GODEBUG=schedtrace=1000", "GOMAXPROCS=2"}, []string{"GODEBUG=schedtrace=1000", "GOMAXPROCS=2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.env)
			if got := replicaEnv(in); !slices.Equal(got, tc.out) {
				t.Errorf("replicaEnv(%q) = %q, want %q", tc.env, got, tc.out)
			}
			if !slices.Equal(in, tc.env) {
				t.Errorf("replicaEnv changed its argument to %q", in)
			}
		})
	}
}
