package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"
)

// runApply sends a config file to a running server (POST /-/apply), which
// makes its applications the running ones as SIGHUP does; the file is
// checked here first, so its mistakes are listed with their lines.
func runApply(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	baseURL, key := adminFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: llmux apply [--base-url URL] [--admin-key KEY] FILE\n\nApplies a config file's applications to a running llmux serve.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("apply: want one config file")
	}
	path := fs.Arg(0)
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if _, err := parseConfig(path, data, defaultRegistry(), false); err != nil {
		return fmt.Errorf("apply: not sent: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	body, err := adminCall(ctx, *baseURL, *key, http.MethodPost, "/-/apply", "application/yaml", bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	return printJSON(body)
}
