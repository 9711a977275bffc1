package models

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// SentencePiece token types as llama.cpp reads them from tokenizer.ggml.token_type.
const (
	tokNormal  int32 = 1
	tokUnknown int32 = 2
	tokControl int32 = 3
	tokByte    int32 = 6
)

// Token ids every synthesized vocab shares.
const (
	UnkID = 0
	BOSID = 1
	EOSID = 2
)

// chatML is the chat template written into synthesized models; llama.cpp
// recognizes it, and the two control tokens it uses are part of the vocab.
const chatML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

// Words seeded into every vocab (with all their prefixes, so SentencePiece's
// pair merges can reach them), before pseudo-random pieces fill the rest.
var seedWords = strings.Fields(`the a and to of was he she it in that his her they with
on for you is said had one day time once upon there were very little big happy play
went saw what not so but all be at have we can do go up out like see mom dad friend
tree sun dog cat ball red blue green good new old how who this then when`)

type vocab struct {
	tokens []string
	scores []float32
	types  []int32
}

// buildVocab makes a SentencePiece-style vocab of exactly size tokens:
// <unk>, <s>, </s>, optionally the 256 byte-fallback tokens, the chat control
// tokens, printable ASCII, seed words and their prefixes, then generated
// pieces. Earlier pieces score higher, so merges prefer common ones.
func buildVocab(size int, byteTokens bool, seed uint64) (*vocab, error) {
	v := &vocab{}
	seen := map[string]bool{}
	add := func(s string, typ int32) bool {
		if seen[s] || len(v.tokens) >= size {
			return false
		}
		seen[s] = true
		v.tokens = append(v.tokens, s)
		v.scores = append(v.scores, -float32(len(v.tokens)))
		v.types = append(v.types, typ)
		return true
	}
	add("<unk>", tokUnknown)
	add("<s>", tokControl)
	// EOS is spelled as llama.cpp's end-of-generation list knows it, so it
	// is an end-of-generation token beside <|im_end|>.
	add("<|endoftext|>", tokControl)
	if byteTokens {
		for b := range 256 {
			add(fmt.Sprintf("<0x%02X>", b), tokByte)
		}
	}
	add("<|im_start|>", tokControl)
	add("<|im_end|>", tokControl)
	min := len(v.tokens) + 96
	if size < min {
		return nil, fmt.Errorf("vocab size %d is too small: this layout needs at least %d", size, min)
	}
	add("▁", tokNormal)
	for c := byte(' ' + 1); c < 127; c++ {
		add(string(c), tokNormal)
	}
	add("\n", tokNormal)
	for _, w := range seedWords {
		p := "▁" + w
		for i := len("▁") + 1; i <= len(p); i++ {
			add(p[:i], tokNormal)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x766f636162))
	const letters = "etaoinshrdlucmfwypvbgkqjxz"
	for tries := 0; len(v.tokens) < size && tries < size*100; tries++ {
		n := 2 + rng.IntN(5)
		var sb strings.Builder
		if rng.IntN(2) == 0 {
			sb.WriteString("▁")
		}
		for range n {
			// Skewed towards frequent letters.
			sb.WriteByte(letters[int(float64(len(letters))*rng.Float64()*rng.Float64())])
		}
		add(sb.String(), tokNormal)
	}
	if len(v.tokens) != size {
		return nil, fmt.Errorf("vocab: made %d of %d tokens", len(v.tokens), size)
	}
	return v, nil
}
