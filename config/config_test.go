package config

import (
	"errors"
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/llmux/llmux/app"
	"github.com/llmux/llmux/autoscale"
	"github.com/llmux/llmux/deploy"
)

// testModel stands for multiplex.ModelConfig (which links llama.cpp).
type testModel struct {
	Name    string   `yaml:"name"`
	Path    string   `yaml:"path"`
	Aliases []string `yaml:"aliases"`
}

func testModelNames(m testModel) []string { return append([]string{m.Name}, m.Aliases...) }

type routerConfig struct {
	Threshold float64  `json:"threshold"`
	Keywords  []string `json:"keywords"`
	MaxTokens int      `json:"max_tokens"`
}

func (c *routerConfig) Validate() error {
	if c.Threshold < 0 || c.Threshold > 1 {
		return errors.New("threshold must be between 0 and 1")
	}
	return nil
}

type authConfig struct {
	Keys []string `json:"keys"`
}

// testRegistry has a router kind (config, any number of calls), an echo
// kind (no config, no calls) and auth middleware.
func testRegistry() *app.Registry {
	r := app.NewRegistry()
	r.Register("router", app.Kind{Config: func() any { return &routerConfig{} }, Calls: -1,
		New: func(any, []*deploy.Handle) (deploy.Deployment, error) { return nil, errors.New("not built in tests") }})
	r.Register("echo", app.Kind{Calls: 0,
		New: func(any, []*deploy.Handle) (deploy.Deployment, error) { return nil, errors.New("not built in tests") }})
	r.RegisterMiddleware("auth", app.MiddlewareKind{Config: func() any { return &authConfig{} }})
	return r
}

// testFlags stands for llmux serve's flags.
func testFlags() *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.String("config", "", "")
	fs.Int("port", 8080, "")
	fs.Int("max-models", 0, "")
	fs.Int("ctx-size", 0, "")
	fs.Duration("keep-alive", 0, "")
	fs.Float64("gpus", 1, "")
	fs.Bool("metrics-auth", false, "")
	fs.String("api-key", "", "")
	return fs
}

func testOptions() Options[testModel] {
	return Options[testModel]{Flags: testFlags(), NotKeys: []string{"config"}, Registry: testRegistry(), ModelNames: testModelNames}
}

const goodFile = `port: 9000
keep_alive: 5m
api-key: [one, two]
models:
  - name: tiny
    path: /m/tiny.gguf
  - name: big
    path: /m/big.gguf
    aliases: [large-model]
applications:
  - name: chat
    route_prefix: chat
    ingress: router
    middleware:
      - kind: auth
        config: {keys: [k1]}
    deployments:
      - name: small
        kind: llm
        models: [tiny]
      - {name: large, kind: llm, models: [big]}
      - name: router
        kind: router
        replicas: 2
        max_ongoing_requests: 8
        calls: [small, large]
        user_config:
          threshold: 0.5
          keywords: [code, sql]
          max_tokens: 64
  - name: echo
    deployments:
      - name: echo
        kind: echo
        autoscaling_config:
          min_replicas: 0
          max_replicas: 4
          target_ongoing_requests: 2
          upscale_delay: 1s
`

// TestGoEqualsYAML builds the same applications with the Go API and from
// the file and finds the resolved specs equal.
func TestGoEqualsYAML(t *testing.T) {
	f, probs := Parse("good.yaml", []byte(goodFile), testOptions())
	if len(probs) > 0 {
		t.Fatalf("problems in a good file:\n%v", probs)
	}
	chat, err := app.New("chat").Route("/chat").
		LLM("small", "tiny").
		LLM("large", "big").
		Deploy("router", "router", routerConfig{Threshold: 0.5, Keywords: []string{"code", "sql"}, MaxTokens: 64}, "small", "large").Scale(2, 8).
		Ingress("router").
		Use("auth", authConfig{Keys: []string{"k1"}}).
		Spec()
	if err != nil {
		t.Fatal(err)
	}
	scaling := autoscale.DefaultConfig()
	scaling.MinReplicas, scaling.MaxReplicas, scaling.TargetOngoingRequests, scaling.UpscaleDelay = 0, 4, 2, time.Second
	echo, err := app.New("echo").Deploy("echo", "echo", nil).Autoscale(scaling).Spec()
	if err != nil {
		t.Fatal(err)
	}
	want := []app.Spec{chat, echo}
	if !reflect.DeepEqual(f.Applications, want) {
		t.Errorf("from YAML:\n%#v\nfrom Go:\n%#v", f.Applications, want)
	}
	wantFlat := map[string]string{"port": "9000", "keep-alive": "5m", "api-key": "one,two"}
	if !reflect.DeepEqual(f.Flat, wantFlat) {
		t.Errorf("flat keys: got %v, want %v", f.Flat, wantFlat)
	}
	if f.Keys["keep-alive"] != "keep_alive" {
		t.Errorf("keep-alive written as %q, want keep_alive", f.Keys["keep-alive"])
	}
	if len(f.Models) != 2 || f.Models[1].Aliases[0] != "large-model" {
		t.Errorf("models: got %+v", f.Models)
	}
}

func TestEmptyFile(t *testing.T) {
	for _, data := range []string{"", "# nothing\n", "---\n"} {
		f, probs := Parse("empty.yaml", []byte(data), testOptions())
		if len(probs) > 0 || len(f.Flat) > 0 || f.Applications != nil {
			t.Errorf("%q: got %v, %+v; want nothing", data, probs, f)
		}
	}
}

// app1 is an application whose deployments follow (indented by 4).
const app1 = "applications:\n  - name: a\n    ingress: r\n    deployments:\n"

// TestMistakes finds each kind of mistake at its line and column.
func TestMistakes(t *testing.T) {
	cases := []struct {
		name      string
		file      string
		line, col int
		path      string
		msg, fix  string // substrings
	}{
		{"UnknownTopLevelKey", "port: 1\nmax_model: 2\n", 2, 1, "max_model", `unknown key "max_model"`, "did you mean max-models?"},
		{"UnknownTopLevelKeyFar", "wibble: 2\n", 1, 1, "wibble", `unknown key "wibble"`, "remove it"},
		{"ConfigKeyInFile", "config: other.yaml\n", 1, 1, "config", "cannot be set in the config file", ""},
		{"KeyGivenTwice", "ctx_size: 1\nport: 2\nctx-size: 3\n", 3, 1, "ctx-size", "given twice (also line 1)", "keep one"},
		{"BadDuration", "keep-alive: 5 minutes\n", 1, 13, "keep-alive", `"5 minutes" is not a duration`, "5m"},
		{"WrongTypeFlat", "port: eighty\n", 1, 7, "port", `"eighty" is not a whole number`, "default 8080"},
		{"WrongTypeMapping", "port:\n  a: 1\n", 2, 3, "port", "takes a value, not a mapping", ""},
		{"WrongTypeBool", "metrics-auth: sometimes\n", 1, 15, "metrics-auth", "not true or false", ""},
		{"WrongTypeNested", app1 + "      - name: r\n        kind: echo\n        replicas: two\n", 7, 19, "applications[0].deployments[0].replicas", `wants a whole number, not "two"`, ""},
		{"WrongTypeList", "applications:\n  - name: a\n    deployments: r\n", 3, 18, "applications[0].deployments", "wants a list", "- "},
		{"YAMLSyntax", "port: 1\n  parallel: 2\n", 2, 0, "", "mapping values are not allowed", "YAML syntax"},
		{"UnknownApplicationKey", "applications:\n  - name: a\n    route: /x\n    deployments: [{name: r, kind: echo}]\n", 3, 5, "applications[0].route", `unknown key "route" in an application`, "route_prefix"},
		{"UnknownDeploymentKey", app1 + "      - name: r\n        kind: echo\n        replica: 2\n", 7, 9, "applications[0].deployments[0].replica", `unknown key "replica" in a deployment`, "did you mean replicas?"},
		{"UnknownMiddlewareKey", "applications:\n  - name: a\n    middleware:\n      - kind: auth\n        cfg: {keys: [k]}\n    deployments: [{name: r, kind: echo}]\n", 5, 9, "applications[0].middleware[0].cfg", `unknown key "cfg" in a middleware entry`, ""},
		{"UnknownModelsKey", "models:\n  - name: m\n    alias: [x]\n", 3, 5, "models[0].alias", `unknown key "alias" in an entry of models`, "did you mean aliases?"},
		{"UnknownKind", app1 + "      - name: r\n        kind: rooter\n", 6, 15, "applications[0].deployments[0].kind", `unknown deployment kind "rooter"`, "echo, router"},
		{"MissingHandle", app1 + "      - name: r\n        kind: router\n        calls: [x, nope]\n      - {name: x, kind: echo}\n", 7, 20, "applications[0].deployments[0].calls[1]", `calls "nope"`, "define it"},
		{"Cycle", app1 + "      - {name: r, kind: router, calls: [b]}\n      - {name: b, kind: router, calls: [c]}\n      - {name: c, kind: router, calls: [b]}\n", 5, 7, "applications[0].deployments", "cycle: b → c → b", ""},
		{"SameRoutePrefix", "applications:\n  - {name: a, route_prefix: /x, deployments: [{name: r, kind: echo}]}\n  - {name: b, route_prefix: x/, deployments: [{name: r, kind: echo}]}\n", 3, 29, "applications[1].route_prefix", `route prefix "/x" is also applications[0]'s`, ""},
		{"OverlappingRoutePrefix", "applications:\n  - {name: a, route_prefix: /x, deployments: [{name: r, kind: echo}]}\n  - {name: b, route_prefix: /x/y, deployments: [{name: r, kind: echo}]}\n", 3, 29, "applications[1].route_prefix", `overlaps "/x"`, "do not nest"},
		{"InvalidRoutePrefix", "applications:\n  - name: a\n    route_prefix: /my app\n    deployments: [{name: r, kind: echo}]\n", 3, 19, "applications[0].route_prefix", "is not a path", ""},
		{"DuplicateApplication", "applications:\n  - {name: a, route_prefix: /a, deployments: [{name: r, kind: echo}]}\n  - {name: a, route_prefix: /b, deployments: [{name: r, kind: echo}]}\n", 3, 12, "applications[1].name", `application "a" is defined twice`, ""},
		{"DuplicateDeployment", app1 + "      - {name: r, kind: echo}\n      - {name: r, kind: echo}\n", 6, 16, "applications[0].deployments[1].name", `deployment "r" is defined twice`, ""},
		{"IngressNotADeployment", "applications:\n  - name: a\n    ingress: nope\n    deployments: [{name: r, kind: echo}]\n", 3, 14, "applications[0].ingress", `ingress "nope" is not a deployment`, ""},
		{"ModelNotInCatalog", "models:\n  - {name: tiny, aliases: [small]}\napplications:\n  - name: a\n    deployments:\n      - name: m\n        kind: llm\n        models: [small, tyni]\n", 8, 25, "applications[0].deployments[0].models[1]", `model "tyni" is not in the models: list (validate sees only that list`, "did you mean tiny?"},
		{"BadUserConfigKey", app1 + "      - name: r\n        kind: router\n        user_config:\n          treshold: 0.5\n", 8, 11, "applications[0].deployments[0].user_config", `unknown field "treshold"`, ""},
		{"BadUserConfigValue", app1 + "      - name: r\n        kind: router\n        user_config: {threshold: 2}\n", 7, 22, "applications[0].deployments[0].user_config", "threshold must be between 0 and 1", ""},
		{"ConfigForKindWithout", app1 + "      - name: r\n        kind: echo\n        user_config: {x: 1}\n", 7, 22, "applications[0].deployments[0].user_config", "takes no config", ""},
		{"UnknownMiddleware", "applications:\n  - name: a\n    middleware: [{kind: oauth}]\n    deployments: [{name: r, kind: echo}]\n", 3, 25, "applications[0].middleware[0].kind", `unknown middleware "oauth"`, "auth"},
		{"NoIngress", "applications:\n  - name: a\n    deployments: [{name: r, kind: echo}, {name: s, kind: echo}]\n", 2, 5, "applications[0].ingress", "no ingress", "ingress: <deployment>"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, probs := Parse("llmux.yaml", []byte(c.file), testOptions())
			if len(probs) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(probs), probs)
			}
			p := probs[0]
			if p.File != "llmux.yaml" || p.Line != c.line || p.Column != c.col || p.Path != c.path ||
				!strings.Contains(p.Message, c.msg) || !strings.Contains(p.Fix, c.fix) {
				t.Errorf("got  %s:%d:%d %s: %s (fix: %s)\nwant %s:%d:%d %s: …%s… (fix: …%s…)",
					p.File, p.Line, p.Column, p.Path, p.Message, p.Fix, "llmux.yaml", c.line, c.col, c.path, c.msg, c.fix)
			}
		})
	}
}

// TestEveryMistake finds every mistake of one file, in file order.
func TestEveryMistake(t *testing.T) {
	file := `prot: 80
keep-alive: 5 minutes
applications:
  - name: a
    ingress: nope
    deployments:
      - name: r
        kind: router
        calls: [missing]
        replicas: two
      - name: s
        kind: rooter
`
	_, probs := Parse("llmux.yaml", []byte(file), testOptions())
	var got []int
	for _, p := range probs {
		got = append(got, p.Line)
	}
	if want := []int{1, 2, 5, 9, 10, 12}; !reflect.DeepEqual(got, want) {
		t.Errorf("lines: got %v, want %v\n%v", got, want, probs)
	}
	if s := probs.Error(); !strings.HasPrefix(s, "llmux.yaml:1:1: prot: unknown key \"prot\" (fix: did you mean port?)\n") {
		t.Errorf("Error() starts %q", s)
	}
	// A value of the wrong type is left zero when decoding goes on; what
	// holds it is not checked further, and for a name its application is
	// not (no "ingress r is not a deployment" for name: [r]).
	_, probs = Parse("llmux.yaml", []byte(app1+"      - name: [r]\n        kind: echo\n      - {name: s, kind: rooter}\n"), testOptions())
	got = nil
	for _, p := range probs {
		got = append(got, p.Line)
	}
	if want := []int{5}; !reflect.DeepEqual(got, want) {
		t.Errorf("lines: got %v, want %v\n%v", got, want, probs)
	}
}

func TestFlatValuesSetOnFlags(t *testing.T) {
	opts := testOptions()
	if _, probs := Parse("f.yaml", []byte("keep-alive: 90s\ngpus: 0.5\n"), opts); len(probs) > 0 {
		t.Fatal(probs)
	}
	if got := opts.Flags.Lookup("keep-alive").Value.(flag.Getter).Get(); got != 90*time.Second {
		t.Errorf("keep-alive: got %v, want 1m30s", got)
	}
}

func TestLocate(t *testing.T) {
	f, probs := Parse("good.yaml", []byte(goodFile), testOptions())
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	cases := []struct {
		path      string
		line, col int
	}{
		{"port", 1, 7},
		{"keep-alive", 2, 13}, // written keep_alive
		{"applications[0].deployments[2].calls[1]", 26, 24},
		{"applications[0].deployments[1].models[0]", 21, 43},
		{"applications[1].ingress", 31, 5}, // not written: its application
		{"applications[7]", 11, 3},         // no such item: the list
		{"nothere", 1, 1},
	}
	for _, c := range cases {
		if l, col := f.Locate(c.path); l != c.line || col != c.col {
			t.Errorf("%s: got %d:%d, want %d:%d", c.path, l, col, c.line, c.col)
		}
	}
}

func TestNearest(t *testing.T) {
	names := []string{"port", "max-models", "keep-alive", "replicas", "ctx-size"}
	cases := map[string]string{"prot": "port", "max_model": "max-models", "keepalive": "keep-alive", "replica": "replicas", "zzz": "", "ctx_size": "ctx-size"}
	for in, want := range cases {
		if got := nearest(in, names); got != want {
			t.Errorf("nearest(%q) = %q, want %q", in, got, want)
		}
	}
}
