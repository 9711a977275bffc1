package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmux/llmux/models/modeltest"
	"github.com/llmux/llmux/openai"
	"github.com/llmux/llmux/scheduler"
)

type respObj struct {
	ID     string `json:"id"`
	Object string `json:"object"`
	Status string `json:"status"`
	Model  string `json:"model"`
	Output []struct {
		Type      string `json:"type"`
		ID        string `json:"id"`
		CallID    string `json:"call_id"`
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
		Content   []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"output"`
	Usage struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
	} `json:"usage"`
	Error *struct {
		Code string `json:"code"`
	} `json:"error"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
}

func doJSON(t *testing.T, method, url, key, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if out != nil {
		if err := json.Unmarshal(buf.Bytes(), out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, buf.String())
		}
	}
	return resp.StatusCode
}

// TestResponsesAPI runs the Responses API on a real engine: a response,
// its storage (visible to its own key only, deleted on request), a
// conversation continued by previous_response_id, a forced function call
// answered by a function_call_output, a stream's events in order, and
// bad input refused in OpenAI's shape.
func TestResponsesAPI(t *testing.T) {
	ts := startServer(t, modeltest.Preset(t, "small"), Options{APIKeys: []string{"alice", "bob"}}, scheduler.Options{})
	url := ts.URL + "/v1/responses"
	var r1 respObj
	if st := doJSON(t, "POST", url, "alice", `{"model":"`+ts.model+`","instructions":"Be brief.","input":"Once upon a time","max_output_tokens":4,"temperature":0}`, &r1); st != 200 {
		t.Fatalf("status %d", st)
	}
	if !strings.HasPrefix(r1.ID, "resp_") || r1.Object != "response" || r1.Status != "incomplete" || r1.IncompleteDetails == nil || r1.IncompleteDetails.Reason != "max_output_tokens" ||
		len(r1.Output) != 1 || r1.Output[0].Type != "message" || r1.Usage.OutputTokens != 4 {
		t.Fatalf("response %+v", r1)
	}
	var got respObj
	if st := doJSON(t, "GET", url+"/"+r1.ID, "alice", "", &got); st != 200 || got.ID != r1.ID || got.Output[0].Content[0].Text != r1.Output[0].Content[0].Text {
		t.Fatalf("GET own response: %d %+v", st, got)
	}
	var e openai.ErrorBody
	if st := doJSON(t, "GET", url+"/"+r1.ID, "bob", "", &e); st != 404 {
		t.Fatalf("another key's GET: %d %+v", st, e)
	}
	if st := doJSON(t, "POST", url, "bob", `{"model":"`+ts.model+`","previous_response_id":"`+r1.ID+`","input":"and then"}`, &e); st != 404 || e.Error == nil || e.Error.Param == nil || *e.Error.Param != "previous_response_id" {
		t.Fatalf("another key's previous_response_id: %d %+v", st, e.Error)
	}

	// The next turn sees the first one: its prompt holds it.
	var r2 respObj
	if st := doJSON(t, "POST", url, "alice", `{"previous_response_id":"`+r1.ID+`","input":"and then","max_output_tokens":2}`, &r2); st != 200 || r2.Model != ts.model {
		t.Fatalf("second turn: %d %+v", st, r2)
	}
	if r2.Usage.InputTokens <= r1.Usage.InputTokens+r1.Usage.OutputTokens-5 {
		t.Fatalf("the second turn's prompt (%d tokens) does not hold the first (%d + %d)", r2.Usage.InputTokens, r1.Usage.InputTokens, r1.Usage.OutputTokens)
	}

	// A forced call, answered.
	tools := `"tools":[{"type":"function","name":"get_weather","description":"Weather","parameters":` + string(weatherParams) + `}]`
	var r3 respObj
	if st := doJSON(t, "POST", url, "alice", `{"model":"`+ts.model+`","input":"Weather?","temperature":0,"max_output_tokens":300,`+tools+`,"tool_choice":{"type":"function","name":"get_weather"}}`, &r3); st != 200 {
		t.Fatalf("forced call: %d", st)
	}
	call := r3.Output[len(r3.Output)-1]
	var args struct {
		Unit string `json:"unit"`
		Days int    `json:"days"`
	}
	dec := json.NewDecoder(strings.NewReader(call.Arguments))
	dec.DisallowUnknownFields()
	if call.Type != "function_call" || call.Name != "get_weather" || !strings.HasPrefix(call.CallID, "call_") || dec.Decode(&args) != nil || (args.Unit != "celsius" && args.Unit != "fahrenheit") || args.Days < 1 || args.Days > 7 {
		t.Fatalf("function call %+v", call)
	}
	var r4 respObj
	if st := doJSON(t, "POST", url, "alice", `{"previous_response_id":"`+r3.ID+`","input":[{"type":"function_call_output","call_id":"`+call.CallID+`","output":"Sunny"}],"max_output_tokens":2,`+tools+`,"tool_choice":"none"}`, &r4); st != 200 {
		t.Fatalf("function_call_output: %d", st)
	}

	// store: false is not kept; DELETE removes.
	var r5 respObj
	doJSON(t, "POST", url, "alice", `{"model":"`+ts.model+`","input":"x","max_output_tokens":1,"store":false}`, &r5)
	if st := doJSON(t, "GET", url+"/"+r5.ID, "alice", "", nil); st != 404 {
		t.Fatalf("store false kept: %d", st)
	}
	if st := doJSON(t, "DELETE", url+"/"+r1.ID, "bob", "", nil); st != 404 {
		t.Fatalf("another key deleted: %d", st)
	}
	if st := doJSON(t, "DELETE", url+"/"+r1.ID, "alice", "", nil); st != 200 {
		t.Fatalf("DELETE: %d", st)
	}
	if st := doJSON(t, "GET", url+"/"+r1.ID, "alice", "", nil); st != 404 {
		t.Fatalf("deleted still there: %d", st)
	}

	// Streamed: the lifecycle and item events in order.
	req, _ := http.NewRequest("POST", url, strings.NewReader(`{"model":"`+ts.model+`","input":"Once","max_output_tokens":3,"stream":true,"temperature":0}`))
	req.Header.Set("Authorization", "Bearer alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	names, data := sseEvents(t, resp.Body)
	resp.Body.Close()
	var kinds []string
	for i, n := range names {
		if n != "response.output_text.delta" {
			kinds = append(kinds, n)
		}
		if int(data[i]["sequence_number"].(float64)) != i {
			t.Fatalf("event %d has sequence_number %v", i, data[i]["sequence_number"])
		}
	}
	want := "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.done response.content_part.done response.output_item.done response.incomplete"
	if strings.Join(kinds, " ") != want {
		t.Fatalf("events %v\nwant (deltas removed) %s", names, want)
	}
	final := data[len(data)-1]["response"].(map[string]any)
	if st := doJSON(t, "GET", url+"/"+final["id"].(string), "alice", "", nil); st != 200 {
		t.Fatalf("streamed response not stored: %d", st)
	}

	for _, tc := range []struct{ name, body, param string }{
		{"no input", `{"model":"` + ts.model + `"}`, "input"},
		{"unknown item", `{"model":"` + ts.model + `","input":[{"type":"hologram"}]}`, "input[0].type"},
		{"image", `{"model":"` + ts.model + `","input":[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}]}`, "input[0].content[0].type"},
		{"orphan output", `{"model":"` + ts.model + `","input":[{"type":"function_call_output","call_id":"call_x","output":"1"}]}`, "input[0].call_id"},
		{"unknown previous", `{"model":"` + ts.model + `","previous_response_id":"resp_nope","input":"x"}`, "previous_response_id"},
		{"web search", `{"model":"` + ts.model + `","input":"x","tools":[{"type":"web_search"}]}`, "tools[0].type"},
		{"wrong type", `{"model":"` + ts.model + `","input":5}`, ""},
	} {
		var e openai.ErrorBody
		st := doJSON(t, "POST", url, "alice", tc.body, &e)
		if st != 400 && st != 404 || e.Error == nil || tc.param != "" && (e.Error.Param == nil || *e.Error.Param != tc.param) {
			t.Errorf("%s: %d %+v, want a 4xx on %q", tc.name, st, e.Error, tc.param)
		}
	}
}

// TestDeepResponseChain: a previous_response_id at the end of a chain a
// thousand turns deep answers with a 400 (the conversation no longer fits
// the limits), never a 500.
func TestDeepResponseChain(t *testing.T) {
	ts := tinyServer(t, Options{})
	var history []openai.Message
	prev := ""
	for i := range 1000 {
		history = append(history, openai.Message{Role: "user", Content: openai.Content{Text: fmt.Sprint("turn ", i)}}, openai.Message{Role: "assistant", Content: openai.Content{Text: "ok"}})
		prev = fmt.Sprintf("resp_%04d", i)
		ts.srv.responses.put(&storedResponse{id: prev, created: time.Now(), resp: openai.Response{ID: prev, Model: ts.model}, history: append([]openai.Message(nil), history...), size: 1})
	}
	var e openai.ErrorBody
	if st := doJSON(t, "POST", ts.URL+"/v1/responses", "", `{"previous_response_id":"`+prev+`","input":"and then"}`, &e); st != 400 || e.Error == nil {
		t.Fatalf("a 1000-turn chain: %d %+v", st, e.Error)
	}
}

// TestResponseStoreBounds: the store holds its count and byte bounds
// under 10,000 puts, drops the expired, and hides a response from every
// key but its creator's.
func TestResponseStoreBounds(t *testing.T) {
	s := newResponseStore(100, 50_000, time.Hour)
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	for i := range 10000 {
		s.put(&storedResponse{id: fmt.Sprint(i), owner: "a", created: now, size: int64(100 + i%900)})
		if n, b := s.usage(); n > 100 || b > 50_000 {
			t.Fatalf("after %d puts: %d responses, %d bytes", i+1, n, b)
		}
	}
	if _, ok := s.get("9999", "a"); !ok {
		t.Fatal("the newest response is gone")
	}
	if _, ok := s.get("0", "a"); ok {
		t.Fatal("the oldest response is still there")
	}
	if _, ok := s.get("9999", "b"); ok {
		t.Fatal("another owner sees the response")
	}
	if s.delete("9999", "b") {
		t.Fatal("another owner deleted the response")
	}
	now = now.Add(time.Hour)
	if _, ok := s.get("9999", "a"); ok {
		t.Fatal("an expired response is still served")
	}
	s.put(&storedResponse{id: "big", size: 60_000, created: now})
	if _, ok := s.get("big", ""); ok {
		t.Fatal("a response over the byte bound was kept")
	}
}
