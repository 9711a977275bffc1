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
	baseURL, key := adminFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	body, err := adminCall(ctx, *baseURL, *key, http.MethodGet, "/-/status", "", nil)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	return printJSON(body)
}

// adminFlags are the flags of the commands that call a running server's
// admin routes.
func adminFlags(fs *flag.FlagSet) (baseURL, key *string) {
	baseURL = fs.String("base-url", "http://127.0.0.1:8080", "server URL")
	key = fs.String("admin-key", os.Getenv("LLMUX_ADMIN_KEY"), "the server's admin key (default $LLMUX_ADMIN_KEY)")
	return baseURL, key
}

// adminCall calls an admin route of a running server and returns the
// body of its 200; any other answer is an error with the server's message.
func adminCall(ctx context.Context, baseURL, key, method, path, contentType string, body io.Reader) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(baseURL, "/")+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		if json.Unmarshal(out, &e) == nil && e.Error.Message != "" {
			return nil, fmt.Errorf("%s: %s", resp.Status, e.Error.Message)
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// printJSON writes a JSON answer indented to stdout.
func printJSON(body []byte) error {
	var out bytes.Buffer
	if err := json.Indent(&out, body, "", "  "); err != nil {
		return fmt.Errorf("the server's answer is not JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err := out.WriteTo(os.Stdout)
	return err
}
