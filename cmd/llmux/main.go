// Command llmux is an LLM serving server: an OpenAI-compatible HTTP API over
// llama.cpp engines with continuous batching. Run `llmux help` for commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// Set by the Makefile's -ldflags.
var (
	version   = "dev"
	cpuTarget = "unknown (built without the Makefile)"
	cpuFlags  = ""
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "serve models over the OpenAI API", runServe},
		{"replica", "serve models to llmux serve over a Unix socket (started by serve)", runReplica},
		{"config", "check a config file: config validate FILE", runConfig},
		{"apply", "apply a config file's applications to a running server (needs its admin key)", runApply},
		{"status", "print a running server's deployments and replicas (needs its admin key)", runStatus},
		{"generate", "generate text from a prompt in the terminal", runGenerate},
		{"models", "inspect and synthesize GGUF models (models help)", runModels},
		{"bench", "benchmark an OpenAI-compatible server (bench -h)", runBench},
		{"version", "print the version and how the binary was built", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dispatch(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "llmux:", err)
		os.Exit(1)
	}
}

func dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		// With no command, serve the default model: `llmux` just works.
		return runServe(ctx, nil)
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" {
		usage(os.Stdout, "llmux", commands())
		return nil
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(ctx, args[1:])
		}
	}
	usage(os.Stderr, "llmux", commands())
	return fmt.Errorf("unknown command %q", name)
}

func usage(w io.Writer, prog string, cmds []command) {
	fmt.Fprintf(w, "Usage: %s <command> [flags]\n\nCommands:\n", prog)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun '%s <command> -h' for a command's flags.\n", prog)
}

func runVersion(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Printf("llmux %s\n", version)
	fmt.Printf("go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Printf("llama.cpp: from github.com/ollama/ollama v0.24.0 (cgo bindings)\n")
	fmt.Printf("cpu target: %s", cpuTarget)
	if cpuFlags != "" {
		fmt.Printf(" (%s)", cpuFlags)
	}
	fmt.Println()
	// Loading the backends logs through slog; version prints, it does not log.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	printBackends(os.Stdout)
	return nil
}

// newLogger builds the process logger from --log-level and --log-format.
func newLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}
