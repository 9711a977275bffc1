package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// runStatus is `llmux status`: GET /-/status with the admin key, printed
// as indented JSON.
func runStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	baseURL := fs.String("base-url", "http://127.0.0.1:8080", "server URL")
	key := fs.String("admin-key", os.Getenv("LLMUX_ADMIN_KEY"), "the server's admin key (default $LLMUX_ADMIN_KEY)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(*baseURL, "/")+"/-/status", nil)
	if err != nil {
		return err
	}
	if *key != "" {
		req.Header.Set("Authorization", "Bearer "+*key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var out bytes.Buffer
	if err := json.Indent(&out, body, "", "  "); err != nil {
		return fmt.Errorf("status: the server's answer is not JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err = out.WriteTo(os.Stdout)
	return err
}
