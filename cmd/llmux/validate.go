package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/llmux/llmux/app"
	"github.com/llmux/llmux/config"
	"github.com/llmux/llmux/gpu"
	"github.com/llmux/llmux/multiplex"
)

// runConfig is `llmux config validate FILE...`.
func runConfig(_ context.Context, args []string) error {
	if len(args) == 0 || args[0] != "validate" {
		fmt.Fprintln(os.Stderr, "Usage: llmux config validate FILE...\n\nChecks llmux serve config files: every mistake with its line and a fix.")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return errors.New("config: want the subcommand validate")
	}
	return runValidate(os.Stdout, args[1:], defaultRegistry(), thisMachine())
}

// runValidate checks each file against reg's kinds and machine m's
// resources, printing its problems, or "FILE: ok".
func runValidate(w io.Writer, args []string, reg *app.Registry, m machine) error {
	fs := flag.NewFlagSet("config validate", flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: llmux config validate FILE...\n\nChecks llmux serve config files (flat server keys, models:, applications:)\nand prints every mistake with its file, line, column and a fix. Models named\nby llm deployments are looked up in the file's models: list only.")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("config validate: no file given")
	}
	var failed []string
	for _, path := range fs.Args() {
		probs, err := validateFile(path, reg, m)
		switch {
		case err != nil:
			fmt.Fprintf(w, "%s: %v\n", path, err)
			failed = append(failed, path)
		case len(probs) > 0:
			for _, p := range probs {
				fmt.Fprintln(w, p)
			}
			fmt.Fprintf(w, "%s: %d problem(s)\n", path, len(probs))
			failed = append(failed, path)
		default:
			fmt.Fprintf(w, "%s: ok\n", path)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("config validate: problems in %s", strings.Join(failed, ", "))
	}
	return nil
}

// validateFile finds every mistake of the config file at path: those of
// the file itself (config.Parse, with the models of llm deployments
// looked up in its models: list), values serve would refuse at start,
// and requests this machine cannot meet.
func validateFile(path string, reg *app.Registry, m machine) (config.Problems, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	file, probs := config.Parse(path, data, config.Options[multiplex.ModelConfig]{
		Flags: newServeFlags().fs, NotKeys: []string{"config", "f"}, Registry: reg, ModelNames: modelNames,
	})
	probs = append(probs, checkValues(file)...)
	probs = append(probs, checkResources(file, m)...)
	slices.SortStableFunc(probs, func(a, b config.Problem) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
	return probs, nil
}

// valueChecks are the flat keys whose values serve reads past the flag's
// own parsing, with what it expects.
var valueChecks = []struct {
	key, fix string
	check    func(string) error
}{
	{"memory-budget", "write a size such as 512MiB or 12GiB", func(s string) error { _, err := parseBytes(s); return err }},
	{"replica-memory-limit", "write a size such as 512MiB or 16GiB", func(s string) error { _, err := parseBytes(s); return err }},
	{"swap-policy", "write swap-aware or lru", func(s string) error { _, err := multiplex.ParseSwapPolicy(s); return err }},
	{"gpu-layers", "write auto, -1 or a number of layers", func(s string) error { _, err := parseGPULayers(s); return err }},
	{"tensor-split", "write proportions such as 3,1", func(s string) error { _, err := parseTensorSplit(s); return err }},
	{"log-level", "write debug, info, warn or error", func(s string) error { _, err := newLogger(s, "text"); return err }},
	{"log-format", "write text or json", func(s string) error { _, err := newLogger("info", s); return err }},
	{"kv-layout", "write unified or per-slot", oneOf("unified", "per-slot")},
	{"flash-attn", "write auto, on or off", oneOf("auto", "on", "off")},
	{"kv-type", "write f16, q8_0 or q4_0", oneOf("f16", "q8_0", "q4_0")},
}

func oneOf(vals ...string) func(string) error {
	return func(s string) error {
		if !slices.Contains(vals, s) {
			return fmt.Errorf("%q is not one of %s", s, strings.Join(vals, ", "))
		}
		return nil
	}
}

// checkValues finds flat values that parse as the flag's type but that
// serve refuses.
func checkValues(file *configFile) []config.Problem {
	var out []config.Problem
	for _, c := range valueChecks {
		v, ok := file.Flat[c.key]
		if !ok {
			continue
		}
		if err := c.check(v); err != nil {
			msg := strings.TrimPrefix(err.Error(), "--"+c.key+": ")
			out = append(out, file.Problem(file.Keys[c.key], msg, c.fix))
		}
	}
	return out
}

// machine is what this machine offers the models.
type machine struct {
	node     gpu.Node // as NVML sees it
	memTotal int64    // RAM in bytes; 0 when not known
}

// thisMachine discovers the GPUs (none without NVML) and the RAM.
func thisMachine() machine {
	node, err := gpu.Discover(nvml.New(), slog.New(slog.DiscardHandler))
	if err != nil {
		node = gpu.Node{CPUOnly: err.Error()}
	}
	return machine{node: node, memTotal: memTotal()}
}

// memTotal reads MemTotal from /proc/meminfo (0 elsewhere).
func memTotal() int64 {
	fh, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// checkResources finds explicit requests the machine cannot meet: a
// memory budget over its memory (RAM and GPU memory together), or more
// GPUs than it has for replicas × gpus. What the file leaves at its
// default is not checked: on a machine without GPUs the replicas run on
// the CPU.
func checkResources(file *configFile, m machine) []config.Problem {
	sf := newServeFlags()
	for k, v := range file.Flat {
		_ = sf.fs.Set(k, v) // Parse has reported the values that do not parse
	}
	var out []config.Problem
	if v, ok := file.Flat["memory-budget"]; ok && m.memTotal > 0 {
		total, gpuMem := m.memTotal, int64(0)
		for _, d := range m.node.Devices {
			gpuMem += d.MemTotal
		}
		total += gpuMem
		if budget, err := parseBytes(v); err == nil && budget > total {
			out = append(out, file.Problem(file.Keys["memory-budget"],
				fmt.Sprintf("memory-budget %s is more than this machine's memory, %s (RAM %s + GPU %s)", v, gpu.GiB(total), gpu.GiB(m.memTotal), gpu.GiB(gpuMem)),
				"lower it to what the models may hold here, or leave it out"))
		}
	}
	if _, ok := file.Flat["gpus"]; ok && *sf.gpus > 0 {
		replicas := max(*sf.replicas, 1)
		need := gpusNeeded(replicas, *sf.gpus)
		if have := len(m.node.Devices); need > have {
			what := strconv.Itoa(have)
			if have == 0 {
				what = "none"
				if m.node.CPUOnly != "" {
					what += " (" + m.node.CPUOnly + ")"
				}
			}
			out = append(out, file.Problem(file.Keys["gpus"],
				fmt.Sprintf("%d replica(s) with gpus %g need %d GPU(s); this machine has %s", replicas, *sf.gpus, need, what),
				"lower gpus or replicas, or leave gpus out to run on the CPU where there is no GPU"))
		}
	}
	return out
}

// gpusNeeded is how many GPUs n replicas of share GPUs each take: whole
// GPUs for a share of 1 or more, else as many replicas to a GPU as their
// shares fit.
func gpusNeeded(n int, share float64) int {
	if share >= 1 {
		return n * int(math.Ceil(share-1e-9))
	}
	perGPU := int(math.Floor(1/share + 1e-9))
	return (n + perGPU - 1) / perGPU
}
