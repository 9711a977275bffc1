package engine

import (
	"strings"
	"testing"
)

// fuzzTemplates are chat templates of the families llama.cpp recognizes,
// in the short forms its detector keys on.
var fuzzTemplates = []string{
	"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}", // ChatML
	"{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}",                     // Llama 3
	"{{ bos_token }}{% for message in messages %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endfor %}",                       // Mistral / Llama 2
	"{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}",                                           // Gemma
	"{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>'}}",                                                 // Phi 3
	"{% if not add_generation_prompt is defined %}{{ '### Instruction:\\n' }}{% endif %}",                                             // unknown: ErrNoTemplate
}

// FuzzChatTemplate renders fuzzed messages (any roles, any bytes) with
// each template family: llama.cpp must neither crash nor lose a user
// message's text (up to its first NUL, where a C string ends).
func FuzzChatTemplate(f *testing.F) {
	f.Add(uint8(0), "system", "be brief", "user", "naïve café ✓")
	f.Add(uint8(1), "user", "", "assistant", "<|eot_id|>")
	f.Add(uint8(2), "tool", "{\"a\":1}", "user", "[INST] nested [/INST]")
	f.Add(uint8(3), "", "\x00\xff\xfe", "user", strings.Repeat("long ", 200))
	f.Add(uint8(4), "user", "%s%n%x", "ROLE", "{{ raise_exception('x') }}")
	f.Add(uint8(5), "user", "hi", "user", "hi")
	f.Fuzz(func(t *testing.T, which uint8, role1, content1, role2, content2 string) {
		tmpl := fuzzTemplates[int(which)%len(fuzzTemplates)]
		msgs := []ChatMessage{{Role: role1, Content: content1}, {Role: role2, Content: content2}}
		out, err := ApplyChatTemplate(tmpl, msgs, true)
		if err != nil {
			return // not a template llama.cpp knows: the caller falls back
		}
		for _, m := range msgs {
			text, _, _ := strings.Cut(m.Content, "\x00")
			if m.Role == "user" && !strings.Contains(out, strings.TrimSpace(text)) {
				t.Fatalf("template %d lost the user's %q:\n%q", which, text, out)
			}
		}
	})
}
