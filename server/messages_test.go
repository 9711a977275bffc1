package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/scheduler"
)

// postJSON posts body with headers and decodes the JSON answer.
func postJSON(t *testing.T, url string, body string, hdr map[string]string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v: %s", url, err, b)
		}
	}
	return resp.StatusCode
}

type anthropicErr struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// sseEvents reads an Anthropic stream: each event's name and data.
func sseEvents(t *testing.T, r io.Reader) (names []string, data []map[string]any) {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var name string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var d map[string]any
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &d); err != nil {
				t.Fatalf("event %s: %v", name, err)
			}
			if d["type"] != name {
				t.Fatalf("event %q carries type %v", name, d["type"])
			}
			names, data = append(names, name), append(data, d)
		}
	}
	return names, data
}

// TestMessagesAPI runs Anthropic's Messages API on a real engine: a
// message, a stream in Anthropic's event order, a forced tool use with a
// schema-valid input, count_tokens, x-api-key auth and errors in
// Anthropic's shape.
func TestMessagesAPI(t *testing.T) {
	ts := startServer(t, modeltest.Preset(t, "small"), Options{APIKeys: []string{"k"}}, scheduler.Options{})
	key := map[string]string{"x-api-key": "k", "anthropic-version": "2023-06-01"}
	url := ts.URL + "/v1/messages"
	msgs := `"messages":[{"role":"user","content":"Hello"}]`

	var msg struct {
		ID         string `json:"id"`
		Type       string `json:"type"`
		Role       string `json:"role"`
		StopReason string `json:"stop_reason"`
		Content    []struct {
			Type  string          `json:"type"`
			Text  string          `json:"text"`
			Name  string          `json:"name"`
			ID    string          `json:"id"`
			Input json.RawMessage `json:"input"`
		} `json:"content"`
		Usage struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
		} `json:"usage"`
	}
	if st := postJSON(t, url, `{"model":"`+ts.model+`","max_tokens":5,"temperature":0,"system":[{"type":"text","text":"Be brief."}],`+msgs+`}`, key, &msg); st != 200 {
		t.Fatalf("status %d", st)
	}
	if !strings.HasPrefix(msg.ID, "msg_") || msg.Type != "message" || msg.Role != "assistant" || msg.StopReason != "max_tokens" || msg.Usage.OutputTokens != 5 || msg.Usage.InputTokens == 0 {
		t.Fatalf("message %+v", msg)
	}

	// Streamed: Anthropic's event order.
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"model":"`+ts.model+`","max_tokens":6,"temperature":0,"stream":true,`+msgs+`}`))
	req.Header.Set("x-api-key", "k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	names, data := sseEvents(t, resp.Body)
	resp.Body.Close()
	got := strings.Join(names, " ")
	got = strings.Join(strings.Fields(strings.ReplaceAll(got, "content_block_delta ", "")), " ")
	if want := "message_start content_block_start ping content_block_stop message_delta message_stop"; got != want {
		t.Fatalf("events %v\nwant (deltas removed) %s", names, want)
	}
	if d := data[len(data)-2]["delta"].(map[string]any); d["stop_reason"] != "max_tokens" {
		t.Fatalf("message_delta %v", data[len(data)-2])
	}

	// A forced tool use: a tool_use block whose input validates.
	tool := `"tools":[{"name":"get_weather","description":"Weather","input_schema":` + string(weatherParams) + `}]`
	if st := postJSON(t, url, `{"model":"`+ts.model+`","max_tokens":300,"temperature":0,`+msgs+`,`+tool+`,"tool_choice":{"type":"tool","name":"get_weather"}}`, key, &msg); st != 200 {
		t.Fatalf("tool use: status %d", st)
	}
	last := msg.Content[len(msg.Content)-1]
	if msg.StopReason != "tool_use" || last.Type != "tool_use" || last.Name != "get_weather" || !strings.HasPrefix(last.ID, "toolu_") {
		t.Fatalf("tool use %+v", msg)
	}
	var in struct {
		Unit string `json:"unit"`
		Days int    `json:"days"`
	}
	dec := json.NewDecoder(bytes.NewReader(last.Input))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || (in.Unit != "celsius" && in.Unit != "fahrenheit") || in.Days < 1 || in.Days > 7 {
		t.Fatalf("input %s does not validate: %v", last.Input, err)
	}
	// The conversation goes on with the result.
	history := `"messages":[{"role":"user","content":"Weather?"},{"role":"assistant","content":[{"type":"tool_use","id":"` + last.ID + `","name":"get_weather","input":` + string(last.Input) + `}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"` + last.ID + `","content":"Sunny"}]}]`
	if st := postJSON(t, url, `{"model":"`+ts.model+`","max_tokens":3,`+history+`,`+tool+`,"tool_choice":{"type":"none"}}`, key, &msg); st != 200 {
		t.Fatalf("after tool_result: status %d", st)
	}

	var count struct {
		InputTokens int `json:"input_tokens"`
	}
	if st := postJSON(t, url+"/count_tokens", `{"model":"`+ts.model+`",`+msgs+`}`, key, &count); st != 200 || count.InputTokens == 0 {
		t.Fatalf("count_tokens %d %+v", st, count)
	}
	var plain struct {
		Usage struct {
			InputTokens int `json:"input_tokens"`
			CacheRead   int `json:"cache_read_input_tokens"`
		} `json:"usage"`
	}
	postJSON(t, url, `{"model":"`+ts.model+`","max_tokens":1,`+msgs+`}`, key, &plain)
	if u := plain.Usage; u.InputTokens+u.CacheRead != count.InputTokens || u.CacheRead == 0 {
		t.Fatalf("count_tokens %d, but the same message's usage is %+v (the second time, read from the prefix cache)", count.InputTokens, u)
	}

	many := make([]string, 10000)
	for i := range many {
		many[i] = `{"type":"text","text":"a"}`
	}
	for _, tc := range []struct {
		name, body string
		hdr        map[string]string
		status     int
		typ        string
	}{
		{"no key", `{"model":"` + ts.model + `","max_tokens":5,` + msgs + `}`, nil, 401, "authentication_error"},
		{"bearer key", `{"model":"nope","max_tokens":5,` + msgs + `}`, map[string]string{"Authorization": "Bearer k"}, 404, "not_found_error"},
		{"missing max_tokens", `{"model":"` + ts.model + `",` + msgs + `}`, key, 400, "invalid_request_error"},
		{"wrong type", `{"model":"` + ts.model + `","max_tokens":"5",` + msgs + `}`, key, 400, "invalid_request_error"},
		{"image", `{"model":"` + ts.model + `","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}}]}]}`, key, 400, "invalid_request_error"},
		{"unknown block", `{"model":"` + ts.model + `","max_tokens":5,"messages":[{"role":"user","content":[{"type":"hologram"}]}]}`, key, 400, "invalid_request_error"},
		{"orphan tool_result", `{"model":"` + ts.model + `","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_x","content":"hi"}]}]}`, key, 400, "invalid_request_error"},
		{"10000 blocks", `{"model":"` + ts.model + `","max_tokens":5,"messages":[{"role":"user","content":[` + strings.Join(many, ",") + `]}]}`, key, 400, "invalid_request_error"},
		{"bad role", `{"model":"` + ts.model + `","max_tokens":5,"messages":[{"role":"system","content":"x"}]}`, key, 400, "invalid_request_error"},
		{"server tool", `{"model":"` + ts.model + `","max_tokens":5,` + msgs + `,"tools":[{"type":"web_search_20250305","name":"web_search"}]}`, key, 400, "invalid_request_error"},
		{"unknown route", `{}`, key, 404, "not_found_error"},
	} {
		var e anthropicErr
		u := url
		if tc.name == "unknown route" {
			u += "/nope"
		}
		if st := postJSON(t, u, tc.body, tc.hdr, &e); st != tc.status || e.Type != "error" || e.Error.Type != tc.typ || e.Error.Message == "" {
			t.Errorf("%s: %d %+v, want %d %s", tc.name, st, e, tc.status, tc.typ)
		}
	}
}
