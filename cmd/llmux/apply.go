package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// runApply sends a config file to a running server (POST /-/apply), which
// makes its applications the running ones as SIGHUP does; the file is
// checked here first, so its mistakes are listed with their lines.
func runApply(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	baseURL := fs.String("base-url", "http://127.0.0.1:8080", "server URL")
	key := fs.String("admin-key", os.Getenv("LLMUX_ADMIN_KEY"), "the server's admin key (default $LLMUX_ADMIN_KEY)")
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(*baseURL, "/")+"/-/apply", bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/yaml")
	if *key != "" {
		req.Header.Set("Authorization", "Bearer "+*key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
			return fmt.Errorf("apply: %s: %s", resp.Status, e.Error.Message)
		}
		return fmt.Errorf("apply: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var out bytes.Buffer
	if err := json.Indent(&out, body, "", "  "); err != nil {
		return fmt.Errorf("apply: the server's answer is not JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err = out.WriteTo(os.Stdout)
	return err
}
