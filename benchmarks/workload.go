package benchmarks

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
)

// Message is a chat message of a workload item.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Item is one request of a workload.
type Item struct {
	Model    string    `json:"model,omitempty"`
	Prompt   string    `json:"prompt,omitempty"`   // completions
	Messages []Message `json:"messages,omitempty"` // chat
	// MaxTokens for the output (0: the server's default).
	MaxTokens int `json:"max_tokens,omitempty"`
	// CancelAfter > 0 makes the client hang up after that many chunks.
	CancelAfter int `json:"cancel_after,omitempty"`
	// PromptWords approximates the prompt's length in tokens.
	PromptWords int `json:"-"`
}

// WorkloadConfig describes which requests to send.
type WorkloadConfig struct {
	Dataset     string   // random, stories, shared-prefix, multi-turn, jsonl
	Path        string   // jsonl: the file
	InputLen    int      // random: mean prompt length in words (≈ tokens)
	OutputLen   int      // mean max_tokens
	RangeRatio  float64  // lengths drawn uniformly in [mean*(1-r), mean*(1+r)]
	PrefixLen   int      // shared-prefix: words in the shared system prompt
	Turns       int      // multi-turn: turns per conversation
	Models      []string // model names to spread requests over
	ModelDist   string   // cycle (default), zipf or pairs (see ModelDists)
	CancelAfter int      // cancellation storm: hang up after k chunks...
	CancelShare float64  // ...on this share of requests
	Seed        uint64
}

var words = strings.Fields(`the a and of to in is was it for on with as at by from
that this be are were have has had not but or an they he she we you his her their
time day night little big small happy sad good old new long short red blue green
cat dog bird tree park house ball girl boy mom dad friend sun moon water book game
went saw said played found looked wanted liked made came gave took ran jumped smiled`)

var storyOpenings = []string{
	"Once upon a time", "One day, a little girl named Lily", "There was a big dog who",
	"Tom and his mom went to the park", "The sun was shining and", "A small bird sat in a tree",
	"Sam had a red ball", "In a little house lived", "Mia liked to play with her friend",
	"The cat saw a big box and",
}

// Generate makes n items. The same config and seed always give the same
// items.
func Generate(cfg WorkloadConfig, n int) ([]Item, error) {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6c6c6d7578))
	if cfg.OutputLen <= 0 {
		cfg.OutputLen = 128
	}
	if cfg.InputLen <= 0 {
		cfg.InputLen = 128
	}
	length := func(mean int) int {
		r := math.Max(0, math.Min(cfg.RangeRatio, 1))
		lo, hi := float64(mean)*(1-r), float64(mean)*(1+r)
		return max(1, int(math.Round(lo+(hi-lo)*rng.Float64())))
	}
	text := func(nw int) string {
		out := make([]string, nw)
		for i := range out {
			out[i] = words[rng.IntN(len(words))]
		}
		return strings.Join(out, " ")
	}
	var items []Item
	switch cfg.Dataset {
	case "", "random":
		for range n {
			nw := length(cfg.InputLen)
			items = append(items, Item{Prompt: text(nw), PromptWords: nw, MaxTokens: length(cfg.OutputLen)})
		}
	case "stories":
		for range n {
			p := storyOpenings[rng.IntN(len(storyOpenings))]
			items = append(items, Item{Prompt: p, PromptWords: len(strings.Fields(p)), MaxTokens: length(cfg.OutputLen)})
		}
	case "shared-prefix":
		pl := cfg.PrefixLen
		if pl <= 0 {
			pl = 512
		}
		system := text(pl)
		for range n {
			q := text(length(16))
			items = append(items, Item{Messages: []Message{{"system", system}, {"user", q}}, Prompt: system + "\n" + q, PromptWords: pl + len(strings.Fields(q)), MaxTokens: length(cfg.OutputLen)})
		}
	case "multi-turn":
		turns := max(cfg.Turns, 2)
		for len(items) < n {
			var hist []Message
			nw := 0
			for t := 0; t < turns && len(items) < n; t++ {
				q := text(length(cfg.InputLen))
				hist = append(hist, Message{"user", q})
				nw += len(strings.Fields(q))
				msgs := append([]Message(nil), hist...)
				items = append(items, Item{Messages: msgs, Prompt: joinMessages(msgs), PromptWords: nw, MaxTokens: length(cfg.OutputLen)})
				// The recorded reply the next turn builds on.
				a := text(length(cfg.OutputLen))
				hist = append(hist, Message{"assistant", a})
				nw += len(strings.Fields(a))
			}
		}
	case "jsonl":
		var err error
		if items, err = readJSONL(cfg.Path, n); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("dataset %q: want random, stories, shared-prefix, multi-turn or jsonl", cfg.Dataset)
	}
	if err := assignModels(items, cfg, rng); err != nil {
		return nil, err
	}
	for i := range items {
		if cfg.CancelAfter > 0 && rng.Float64() < cfg.CancelShare {
			items[i].CancelAfter = cfg.CancelAfter
		}
	}
	return items, nil
}

func joinMessages(ms []Message) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.Content
	}
	return strings.Join(parts, "\n\n")
}

// ModelDists are the values of WorkloadConfig.ModelDist:
//
//   - cycle (the default, also ""): item k goes to model k mod N;
//   - zipf: Zipf-distributed, a few hot models and a long tail of cold ones;
//   - pairs: the churn shape. With N models and C clients (the
//     concurrency level), client i alternates between models i mod N and
//     (i+1) mod N, so every model is wanted all the time by some clients
//     and neighbouring models compete for memory. It depends on which
//     client sends a request, so Generate leaves the items' models empty
//     and the runner names them (RunConfig.ClientModel, PairsModel).
var ModelDists = []string{"cycle", "zipf", "pairs"}

// PairsModel is the model of client's n-th request (n from 0) under
// --model-dist pairs: models[(client + n mod 2) mod N], so the client
// alternates between models[client mod N] and models[(client+1) mod N],
// starting with the first.
func PairsModel(models []string) func(client, n int) string {
	return func(client, n int) string {
		return models[(client+n%2)%len(models)]
	}
}

// assignModels spreads items over the model names: in turn (cycle), or
// Zipf-distributed (a few hot models, a long tail of cold ones). Under
// pairs it leaves them to the runner. Items that name a model keep it.
func assignModels(items []Item, cfg WorkloadConfig, rng *rand.Rand) error {
	switch cfg.ModelDist {
	case "", "cycle", "zipf":
	case "pairs":
		if len(cfg.Models) == 0 {
			return fmt.Errorf("model distribution pairs needs the model names")
		}
		return nil
	default:
		return fmt.Errorf("model distribution %q: want %s", cfg.ModelDist, strings.Join(ModelDists, ", "))
	}
	if len(cfg.Models) == 0 {
		return nil
	}
	var z *rand.Zipf
	if cfg.ModelDist == "zipf" && len(cfg.Models) > 1 {
		z = rand.NewZipf(rng, 1.2, 1, uint64(len(cfg.Models)-1))
	}
	for i := range items {
		if items[i].Model != "" {
			continue
		}
		if z != nil {
			items[i].Model = cfg.Models[z.Uint64()]
		} else {
			items[i].Model = cfg.Models[i%len(cfg.Models)]
		}
	}
	return nil
}

// readJSONL reads up to n items (one JSON object a line: prompt or
// messages, optional model and max_tokens), cycling through the file if it
// has fewer.
func readJSONL(path string, n int) ([]Item, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("jsonl dataset: %w", err)
	}
	defer f.Close()
	var all []Item
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		var it Item
		if err := json.Unmarshal([]byte(s), &it); err != nil {
			return nil, fmt.Errorf("jsonl dataset %s:%d: %w", path, line, err)
		}
		if it.Prompt == "" && len(it.Messages) == 0 {
			return nil, fmt.Errorf("jsonl dataset %s:%d: needs prompt or messages", path, line)
		}
		if it.Prompt == "" {
			it.Prompt = joinMessages(it.Messages)
		}
		it.PromptWords = len(strings.Fields(it.Prompt))
		all = append(all, it)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("jsonl dataset %s is empty", path)
	}
	items := make([]Item, n)
	for i := range items {
		items[i] = all[i%len(all)]
	}
	return items, nil
}
