package openai

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestFlexibleFields(t *testing.T) {
	var c struct {
		Content Content    `json:"content"`
		Stop    StringList `json:"stop"`
		Prompt  Prompt     `json:"prompt"`
	}
	cases := []struct {
		in     string
		text   string
		stop   []string
		texts  []string
		tokens [][]int32
	}{
		{`{"content":"hi","stop":"x","prompt":"p"}`, "hi", []string{"x"}, []string{"p"}, nil},
		{`{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"stop":["x","y"],"prompt":["p","q"]}`, "a\nb", []string{"x", "y"}, []string{"p", "q"}, nil},
		{`{"content":"","stop":null,"prompt":[1,2,3]}`, "", nil, nil, [][]int32{{1, 2, 3}}},
		{`{"content":"z","prompt":[[1],[2,3]]}`, "z", nil, nil, [][]int32{{1}, {2, 3}}},
	}
	for i, tc := range cases {
		c.Stop = nil
		if err := json.Unmarshal([]byte(tc.in), &c); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if c.Content.Text != tc.text || !reflect.DeepEqual([]string(c.Stop), tc.stop) || !reflect.DeepEqual(c.Prompt.Texts, tc.texts) || !reflect.DeepEqual(c.Prompt.Tokens, tc.tokens) {
			t.Fatalf("case %d: got %+v", i, c)
		}
	}
	for _, bad := range []string{
		`{"content":5}`,
		`{"content":[{"type":"image_url"}]}`,
		`{"stop":5}`,
		`{"prompt":{"a":1}}`,
		`{"prompt":[1,"a"]}`,
	} {
		if err := json.Unmarshal([]byte(bad), &c); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	var n struct {
		Content Content `json:"content"`
	}
	if err := json.Unmarshal([]byte(`{"content":null}`), &n); err != nil || !n.Content.Null {
		t.Fatalf("null content: %+v %v", n, err)
	}
}

func TestErrorShape(t *testing.T) {
	b, _ := json.Marshal(ErrorBody{Error: Invalid("n", "n must be 1")})
	want := `{"error":{"message":"n must be 1","type":"invalid_request_error","param":"n","code":null}}`
	if string(b) != want {
		t.Fatalf("got %s\nwant %s", b, want)
	}
}
